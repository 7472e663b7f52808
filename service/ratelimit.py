"""Slowing down clients that keep failing authentication, and only those.

A client that failed auth more than ``allowed`` times within ``window`` seconds is blocked
until enough of its failures leave the window: each wrong guess meanwhile is answered 429
(and counted). Credentials that come before the body (headers, the URL) are still checked
first, so a sender with the right ones is heard even from a blocked address (GitHub's and
Docker Hub's outgoing addresses are shared). A signed body (GitHub, Gitea) can only be
checked once read, and a blocked client's body is never read: it is answered 429 at once.
This does not stop guessing (a right guess is accepted whenever it is checked): secrets
of at least 16 characters do (``rollhook.settings``).

The client is the peer address, or what ``X-Forwarded-For`` says when the peer is a
trusted proxy (walking the list from the right, past every trusted hop).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from rollhook.settings import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Bounds memory when many addresses fail (a scan): the least recently failing are forgotten.
MAX_TRACKED = 10_000


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``ROLLHOOK_TRUSTED_PROXIES``: comma-separated IPs and CIDRs."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"ROLLHOOK_TRUSTED_PROXIES: {part!r} is not an IP address or network"
            ) from None
    return tuple(networks)


class ClientAddress:
    def __init__(self, proxies: tuple[Network, ...]) -> None:
        self._proxies = proxies

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        client = peer or "unknown"
        if not self._proxies or not forwarded_for or not self._trusted(client):
            return client
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a garbled hop: keep the last address we could verify
            client = hop
            if not self._trusted(hop):
                break
        return client


def _bucket(client: str) -> str:
    """The key failures count under: an IPv6 client by its /64, which one host gets whole
    (rotating through it must not reset the count)."""
    if ":" not in client:
        return client
    try:
        return str(ipaddress.IPv6Network(f"{client}/64", strict=False))
    except ValueError:
        return client


class AuthFailures:
    def __init__(
        self, allowed: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._allowed = allowed
        self._window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait, or None when it may be heard."""
        client = _bucket(client)
        failures = self._failures.get(client)
        if failures is None:
            return None
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        if len(failures) <= self._allowed:
            return None
        # Blocked until enough failures expire to bring the count back to the allowance.
        release = failures[len(failures) - self._allowed - 1] + self._window
        return max(1, math.ceil(release - now))

    def failed(self, client: str) -> None:
        client = _bucket(client)
        failures = self._failures.get(client)
        if failures is None:
            failures = self._failures[client] = deque()
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        failures.append(self._clock())
        # Only the newest allowed+1 matter for blocking; older ones cannot.
        while len(failures) > self._allowed + 1:
            failures.popleft()
