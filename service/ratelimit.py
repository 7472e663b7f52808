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
trusted proxy (walking the list from the right, past every trusted hop): the app's own
``ROLLHOOK_TRUSTED_PROXIES`` decides, whatever the server did. A bare ``uvicorn`` keeps
its proxy headers on (trusting loopback) and then replaces the peer address with one
taken from ``X-Forwarded-For`` before the app sees it. A peer address that is one of the
header's own entries may be such a replacement: the real peer is then unknown, and every
such request counts under one shared address (:data:`UNKNOWN_FORWARDED`), which rotating
the header cannot escape.
"""

from __future__ import annotations

import contextlib
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


# Requests whose real peer address cannot be known (see the module's docstring).
UNKNOWN_FORWARDED = "unknown-behind-x-forwarded-for"


def _hosts(hop: str) -> set[str]:
    """The ways a server may have written a forwarded hop into the peer address: as sent,
    without a port (``1.2.3.4:80``, ``[::1]:80``), and in its canonical IP form."""
    forms = {hop}
    if hop.startswith("[") and "]" in hop:
        forms.add(hop[1 : hop.index("]")])
    elif hop.count(":") == 1:
        forms.add(hop.rsplit(":", 1)[0])
    for form in list(forms):
        with contextlib.suppress(ValueError):
            forms.add(str(ipaddress.ip_address(form)))
    return forms


class ClientAddress:
    def __init__(self, proxies: tuple[Network, ...]) -> None:
        self._proxies = proxies
        self.unknown_seen = False  # for one warning per process

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of ROLLHOOK_TRUSTED_PROXIES."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address; ``forwarded_for``: every X-Forwarded-For value, joined."""
        client = peer or "unknown"
        if not forwarded_for:
            return client
        hops = [h.strip() for h in forwarded_for.split(",")]
        if any(client in _hosts(hop) for hop in hops if hop):
            self.unknown_seen = True
            return UNKNOWN_FORWARDED
        if not self._proxies or not self.trusts(client):
            return client
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a garbled hop: keep the last address we could verify
            client = hop
            if not self.trusts(hop):
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
