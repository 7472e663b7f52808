"""``Proxy``: route, hold, serve, drain and remove a target on the running proxy.

Every change goes through the admin APIs of the two Caddy processes (see
``workers.proxy`` for why there are two and what each verb does in Caddy 2.6).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Literal

from workers.closeable import Closeable
from workers.proxy.admin import CaddyAdmin, ProxyError
from workers.proxy.config import (
    PROBE_INTERVAL,
    Layout,
    Route,
    Switch,
    drop_route,
    empty_front_apps,
    place_route,
    read_switch,
    switch_server,
)

# How long the front may take to see a switch's new probe answer: a few probe rounds.
# The front cannot be asked what it saw (Caddy 2.6 exposes no health state in its API).
SEEN = 3 * PROBE_INTERVAL
_POLL = 0.1


class Proxy(Closeable):
    """The proxy in front of every target with ``proxy``; one per caller, closed after use."""

    def __init__(self, layout: Layout, timeout: float = 10.0) -> None:
        self.layout = layout
        self.front = CaddyAdmin(layout.front_admin, timeout)
        self.switch = CaddyAdmin(layout.switch_admin, timeout)

    def close(self) -> None:
        self.front.close()
        self.switch.close()

    # -- routes ------------------------------------------------------------------------

    @contextmanager
    def _front_lock(self) -> Iterator[None]:
        """One front change at a time on this host (read, change, write back)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with (self.layout.root / "front.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def route(
        self,
        target: str,
        listen: str,
        hosts: Sequence[str],
        upstream: str,
        hold: float,
        *,
        tls: Literal["auto", "internal"] = "auto",
    ) -> bool:
        """Create or replace the target's route; a new target starts served by ``upstream``.

        A target the switch already knows keeps what it serves (only ``hold`` follows).
        Returns whether the front changed: an unchanged route is not written, because
        every front change ends the requests the front is holding at that moment.
        """
        wanted = Route(target, listen, tuple(hosts), hold, tls)
        with self._front_lock():
            apps = self.front.get("/config/apps") or empty_front_apps()
            placed = place_route(apps, self.layout, wanted)
            changed = placed != apps
            if changed:
                self.front.post("/config/apps", placed)
        current = self.state(target)
        if current is None:
            self._write(target, Switch(upstream, ready=True, hold=hold))
        elif current.hold != hold:
            self._write(target, replace(current, hold=hold))
        return changed

    def remove(self, target: str) -> None:
        """Take the target off the front and the switch (its listen address may close)."""
        with self._front_lock():
            apps = self.front.get("/config/apps")
            if apps is not None:
                dropped = drop_route(apps, target)
                if dropped != apps:
                    self.front.post("/config/apps", dropped)
        self.switch.delete(f"/config/apps/http/servers/{target}")

    # -- traffic -----------------------------------------------------------------------

    def state(self, target: str) -> Switch | None:
        """What the switch does for the target now (None: no route)."""
        server = self.switch.get(f"/config/apps/http/servers/{target}")
        return read_switch(server) if server else None

    def _current(self, target: str) -> Switch:
        current = self.state(target)
        if current is None:
            raise ProxyError(f"the proxy has no route for {target}")
        return current

    def _write(self, target: str, switch: Switch) -> None:
        self.switch.post(
            f"/config/apps/http/servers/{target}", switch_server(self.layout, target, switch)
        )

    def hold(self, target: str, drain: float = 30.0) -> int:
        """Hold the target's new requests; wait up to ``drain`` s for those already sent.

        Returns how many requests were still in flight when it returned (0: none; the
        app can be stopped without cutting one). Held requests wait in the front, for at
        most the route's ``hold``, until ``serve``.
        """
        current = self._current(target)
        if current.ready:
            self._write(target, replace(current, ready=False))
        time.sleep(SEEN)
        address = f"unix/{self.layout.target_socket(target)}"
        deadline = time.monotonic() + drain
        while True:
            left = self.front.in_flight().get(address, 0)
            if left == 0 or time.monotonic() >= deadline:
                return left
            time.sleep(_POLL)

    def serve(self, target: str, upstream: str) -> None:
        """Send the target's requests to ``upstream`` from now on; held ones go there too.

        Requests in flight on the previous upstream finish there (Caddy keeps the old
        handler until they are done); ``drain`` waits for them.
        """
        current = self._current(target)
        draining = [*current.draining, current.upstream]
        kept = tuple(dict.fromkeys(d for d in draining if d != upstream))
        self._write(target, Switch(upstream, ready=True, hold=current.hold, draining=kept))

    def drain(self, target: str, bound: float) -> int:
        """Wait up to ``bound`` s for the requests still in flight on earlier upstreams.

        Returns how many are left. Once none is, the earlier upstreams are forgotten.
        """
        current = self._current(target)
        if not current.draining:
            return 0
        deadline = time.monotonic() + bound
        while True:
            counts = self.switch.in_flight()
            left = sum(counts.get(address, 0) for address in current.draining)
            if left == 0 or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        if left == 0:
            latest = self._current(target)
            kept = tuple(d for d in latest.draining if d not in current.draining)
            self._write(target, replace(latest, draining=kept))
        return left
