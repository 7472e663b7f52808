"""Only clients that keep failing auth are slowed down, and only for a while."""

from __future__ import annotations

import pytest

from rollhook.settings import ConfigError
from service.ratelimit import UNKNOWN_FORWARDED, AuthFailures, ClientAddress, parse_proxies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_within_the_allowance_are_not_limited() -> None:
    clock = Clock()
    limiter = AuthFailures(allowed=3, window=60, clock=clock)
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # per client


def test_the_block_lifts_when_failures_leave_the_window() -> None:
    clock = Clock()
    limiter = AuthFailures(allowed=2, window=10, clock=clock)
    for step in range(3):
        clock.now = 1000.0 + step
        limiter.failed("c")
    clock.now = 1005.0
    assert limiter.retry_after("c") == 5  # the first failure (t=1000) leaves at 1010
    clock.now = 1010.0
    assert limiter.retry_after("c") is None


def test_many_clients_do_not_grow_memory_without_bound() -> None:
    limiter = AuthFailures(allowed=1, window=60, clock=Clock())
    for i in range(20_000):
        limiter.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter._failures) <= 10_000


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded", "client"),
    [
        ("", "10.0.0.5", "1.2.3.4", "10.0.0.5"),  # no trusted proxies: the peer
        ("10.0.0.0/8", "192.168.1.1", "1.2.3.4", "192.168.1.1"),  # untrusted peer lies
        ("10.0.0.0/8", "10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.0/8", "10.0.0.5", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # spoofed leftmost hop
        ("10.0.0.0/8,127.0.0.1", "127.0.0.1", "1.2.3.4, 10.1.1.1", "1.2.3.4"),  # two proxies
        ("10.0.0.0/8", "10.0.0.5", "garbage", "10.0.0.5"),
        ("10.0.0.0/8", "10.0.0.5", None, "10.0.0.5"),
        ("::1", "::1", "2001:db8::1", "2001:db8::1"),
        ("10.0.0.0/8", "10.0.0.5", "", "10.0.0.5"),
        # The peer is one of the header's own entries: a server (uvicorn's proxy headers)
        # may have put it there, and the real peer is unknown. One shared address then.
        ("", "203.0.113.7", "203.0.113.7", UNKNOWN_FORWARDED),
        ("127.0.0.1", "203.0.113.7", "6.6.6.6, 203.0.113.7:5555", UNKNOWN_FORWARDED),
        ("10.0.0.0/8", "10.0.0.5", "10.0.0.5", UNKNOWN_FORWARDED),
        ("", "::1", "[::1]:80", UNKNOWN_FORWARDED),
        ("", "2001:db8::1", "2001:DB8:0::1", UNKNOWN_FORWARDED),
    ],
)
def test_client_address(proxies: str, peer: str, forwarded: str | None, client: str) -> None:
    assert ClientAddress(parse_proxies(proxies)).resolve(peer, forwarded) == client


def test_bad_trusted_proxies_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="ROLLHOOK_TRUSTED_PROXIES"):
        parse_proxies("10.0.0.0/8, not-an-ip")
