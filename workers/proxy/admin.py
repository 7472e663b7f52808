"""Caddy's admin API (JSON config API) on a unix socket: the only way rollhook changes Caddy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from workers.closeable import Closeable
from workers.proxy.config import ADMIN_HOST


class ProxyError(RuntimeError):
    """Caddy did not answer, or refused a change."""


# Caddy 2.6 restarts its admin server with every config change; a call that lands in that
# moment is refused or reset. Such a call is tried again: any call whose connection was
# refused (nothing was sent), a read (GET) whose connection was reset (it changes nothing).
_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)


class CaddyAdmin(Closeable):
    """``GET``/``POST``/``DELETE`` on one Caddy's ``/config/...`` and ``/id/...`` paths."""

    def __init__(self, socket: Path, timeout: float = 10.0) -> None:
        self.socket = socket
        # A new connection per call: Caddy 2.6 restarts its admin server with every config
        # change, so a kept-alive connection may be reset under the next request.
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            limits=httpx.Limits(max_keepalive_connections=0),
            base_url=f"http://{ADMIN_HOST}",
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        attempt = 0
        while True:
            try:
                return self._client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                unsent = isinstance(exc, httpx.ConnectError)
                reset = isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
                if attempt == len(_RETRIES) or not (unsent or (reset and method == "GET")):
                    raise ProxyError(
                        f"caddy admin at {self.socket}: {method} {path}: {exc}"
                    ) from exc
                time.sleep(_RETRIES[attempt])
                attempt += 1

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise ProxyError(
                f"caddy admin: {response.request.method} {response.request.url.path}: "
                f"{response.status_code} {reason.strip()}"
            )
        return response

    def get(self, path: str) -> Any:
        """The JSON value at a ``/config/`` or ``/id/`` path; None if there is none."""
        response = self._call("GET", path)
        # A missing key below an existing object is 'null'; a missing object on the way
        # is 400 "invalid traversal path"; an unknown @id is 404.
        if response.status_code == 404 or (
            response.status_code == 400 and "invalid traversal path" in response.text
        ):
            return None
        return self._check(response).json()

    def post(self, path: str, value: Any) -> None:
        """Set (or replace) the value at a ``/config/`` path; append if it is an array."""
        self._check(self._call("POST", path, value))

    def delete(self, path: str) -> bool:
        """Remove the value at a path; False if there was none."""
        response = self._call("DELETE", path)
        if response.status_code == 404 or "invalid traversal path" in response.text:
            return False
        self._check(response)
        return True

    def load(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration (``POST /load``)."""
        self._check(self._call("POST", "/load", config))

    def in_flight(self) -> dict[str, int]:
        """Requests being proxied now, per upstream address Caddy knows of."""
        rows = self._check(self._call("GET", "/reverse_proxy/upstreams")).json()
        return {row["address"]: int(row["num_requests"]) for row in rows or []}
