"""What a rollout asks of the front proxy for its target: hold, serve, drain.

The rollout calls these at a few points and nowhere else (see ``workers.proxy`` for
what each does in Caddy and why):

- ``hold`` right before an app stops: new requests wait in the proxy (up to the route's
  ``hold``) and those already sent finish first (up to ``stop_timeout``);
- ``serve`` once a version passed its gate (the new one, or the old one gated again on
  a rollback): held requests go to it, and so does everything after;
- ``drain`` after start-first's switch: wait, bounded, for requests still running on
  the old colour before it stops;
- ``settle`` when a run ends, whatever its outcome: the route points at what rollhook
  believes serves, and is not left holding. The switch's state lives in Caddy and
  outlives a worker killed mid-rollout, so the worker that takes over ends with it too.

A target without ``proxy`` gets the same object with nothing behind it. If the proxy
does not answer, ``hold`` fails the deployment before anything stops; ``serve`` and
``settle`` only log it (the version is serving; ``rollhook proxy`` renders its switch
from the records when it starts again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rollhook.targets import Target
from workers.closeable import Closeable
from workers.errors import InfrastructureError
from workers.proxy import Layout, Proxy, ProxyError
from workers.proxy.config import loopback

Log = Callable[..., None]  # Journal.log: (message, *, level=...)


class Traffic(Closeable):
    """One target's traffic through the proxy, for one run of its deployments."""

    def __init__(
        self,
        target: Target,
        proxy: Proxy | None,
        log: Log,
        cancelled: Callable[[], bool] = lambda: False,
        port: int | None = None,
    ) -> None:
        self.target, self.proxy, self.log, self.cancelled = target, proxy, log, cancelled
        # The port rollhook believes serves: recreate's is always proxy.port; a
        # start-first target's is its serving colour's, which the rollout keeps up to date.
        self.port = port or (target.proxy.port if target.proxy is not None else None)

    @classmethod
    def open(
        cls,
        target: Target,
        root: Path,
        log: Log,
        cancelled: Callable[[], bool],
        port: int | None = None,
    ) -> Traffic:
        """Through the proxy under ``root`` when the target has one; else a no-op."""
        proxy = Proxy(Layout(root)) if target.proxy is not None else None
        return cls(target, proxy, log, cancelled, port)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()

    @property
    def active(self) -> bool:
        return self.proxy is not None

    def hold(self, *, required: bool = True, drain: bool = True) -> None:
        """Before the app stops: hold new requests, let those already sent finish.

        ``required=False`` (a rollback, which must go on whatever the proxy does): a proxy
        that does not answer is logged instead of failing the step. ``drain=False`` (a
        heal of an app that is not running): requests already sent are waiting for the
        app to come back, so nothing is waited for.
        """
        if self.proxy is None:
            return
        bound = self.target.stop_timeout if drain else 0.0
        try:
            left = self.proxy.hold(self.target.name, drain=bound)
        except ProxyError as exc:
            if not required:
                self.log(f"proxy: could not hold requests: {exc}", level=logging.WARNING)
                return
            raise InfrastructureError(
                f"the proxy did not answer, so nothing was stopped (is `rollhook proxy` "
                f"running? it reads the targets file when it starts): {exc}"
            ) from exc
        if left and not drain:
            self.log(f"proxy: holding new requests; {left} sent before wait for the app")
        elif left:
            self.log(
                f"proxy: holding new requests; {left} still in flight after {bound:g}s, "
                "stopping anyway",
                level=logging.WARNING,
            )
        else:
            self.log("proxy: holding new requests; none in flight")

    def serve(self, port: int | None = None) -> None:
        """The app on ``port`` (default: the one believed serving) passed its gate."""
        if port is not None:
            self.port = port
        if self.proxy is None or self.port is None:
            return
        upstream = loopback(self.port)
        try:
            current = self.proxy.state(self.target.name)
            if current is None:
                raise ProxyError(f"the proxy has no route for {self.target.name}")
            if current.ready and current.upstream == upstream:
                return  # a switch reload costs nothing to requests, but is not needed
            self.proxy.serve(self.target.name, upstream)
        except ProxyError as exc:
            self.log(
                f"proxy: could not send requests to {upstream}: {exc}; `rollhook proxy` "
                "serves it when it starts again",
                level=logging.WARNING,
            )
            return
        self.log(f"proxy: serving {upstream}")

    def drain(self, bound: float) -> int:
        """Wait up to ``bound`` s for requests still running on the previous upstream."""
        if self.proxy is None:
            return 0
        try:
            return self.proxy.drain(self.target.name, bound)
        except ProxyError as exc:
            self.log(f"proxy: could not count requests in flight: {exc}", level=logging.WARNING)
            return 0

    def settle(self) -> None:
        """A run ended: leave the route serving what rollhook believes serves.

        Not when the lease was lost: the worker that took the target over decides.
        """
        if self.proxy is not None and not self.cancelled():
            self.serve()
