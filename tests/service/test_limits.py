"""Body size caps (declared and streamed) and the auth-failure rate limit, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service import hooks
from service.ratelimit import AuthFailures
from service.signatures import hub_signature
from tests.service.support import (
    API_TOKEN,
    GITHUB_SECRET,
    REGISTRY_TOKEN,
    Served,
    bare_uvicorn,
    encode,
    fresh_push,
    payload,
    raw,
)

CAP = 16384
REGISTRY_TYPE = "application/vnd.docker.distribution.events.v2+json"
WRONG = "wrong-token-0123456789"


def body_of(size: int) -> bytes:
    doc = payload("github-push.json")
    doc["padding"] = ""
    base = len(encode(doc))
    doc["padding"] = "x" * max(0, size - base)
    return encode(doc)


def announce(app: Served, extra_headers: str) -> str:
    """Announce 100 MB and send none of it: the answer must not wait for the body."""
    request = (
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\n{extra_headers}Content-Length: 104857600\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode()


def test_declared_length_over_the_cap_is_refused_before_reading(
    serve: Callable[..., Served],
) -> None:
    app = serve(max_body_bytes=CAP)
    signed = announce(app, f"X-Hub-Signature-256: sha256={'0' * 64}\r\n")
    assert signed.startswith("HTTP/1.1 413"), signed
    # Without even a signature-shaped header, nothing is read: 401 at once.
    unsigned = announce(app, "")
    assert unsigned.startswith("HTTP/1.1 401"), unsigned


def test_streamed_body_over_the_cap_is_refused(serve: Callable[..., Served]) -> None:
    app = serve(max_body_bytes=CAP)
    body = body_of(CAP * 3)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": "chunked",
        "x-hub-signature-256": hub_signature(GITHUB_SECRET.encode(), body),
    }
    response = app.client.post("/hooks/github", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert response.json()["status"] == "too_large"


def test_a_body_at_the_cap_is_accepted(serve: Callable[..., Served]) -> None:
    app = serve(max_body_bytes=CAP)
    body = body_of(CAP)
    assert len(body) == CAP
    assert app.github(body).status_code == 202
    too_big = body_of(CAP + 1)
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": hub_signature(GITHUB_SECRET.encode(), too_big),
    }
    response = app.client.post("/hooks/github", content=too_big, headers=headers)
    assert response.status_code == 413
    # Unsigned, it is refused before a byte of it is buffered.
    unsigned = app.client.post(
        "/hooks/github", content=too_big, headers={"content-type": "application/json"}
    )
    assert unsigned.status_code == 401


def bad(app: Served, forwarded: str | None = None) -> int:
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-hub-signature-256": "sha256=" + "0" * 64,
    }
    if forwarded:
        headers["x-forwarded-for"] = forwarded
    return app.client.post("/hooks/github", content=b"{}", headers=headers).status_code


def test_clients_that_keep_failing_are_limited(serve: Callable[..., Served]) -> None:
    app = serve(auth_failures_allowed=2, auth_failure_window=60)
    assert [bad(app) for _ in range(2)] == [401, 401]
    limited = app.client.post(
        "/hooks/github",
        content=b"{}",
        headers={"content-type": "application/json", "x-hub-signature-256": "sha256=" + "1" * 64},
    )
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["status"] == "too_many_requests"
    # The API's bearer token counts too, and answers 429 the same way...
    bad_token = app.client.get("/targets", headers={"authorization": "Bearer wrong"})
    assert bad_token.status_code == 429
    # ...but credentials in headers are always heard: somebody failing from a shared
    # address (Docker Hub's outgoing one, say) must not block the real sender.
    assert app.api("GET", "/targets").status_code == 200
    registry = {"authorization": f"Bearer {REGISTRY_TOKEN}", "content-type": REGISTRY_TYPE}
    heard = app.client.post(
        "/hooks/registry", content=raw("distribution-push.json"), headers=registry
    )
    assert heard.status_code == 200, heard.text  # understood (a layer push: not ours)
    # A signed body is the exception: it could only be checked once read, and a blocked
    # client's body is not read. GitHub's delivery waits for the window to pass.
    assert app.github(fresh_push()).status_code == 429


def test_a_blocked_clients_body_is_never_read(
    serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocked, a client announcing a body and sending none is answered 429 at once; had
    its body been waited for, the answer would be 408 at the (shortened) deadline."""
    monkeypatch.setattr(hooks, "BODY_DEADLINE", 0.5)
    app = serve(auth_failures_allowed=1)
    assert [bad(app) for _ in range(2)] == [401, 429]
    request = (
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 429"), answer
    assert "retry-after: " in answer.lower()


def test_senders_with_the_right_secret_are_never_limited(serve: Callable[..., Served]) -> None:
    app = serve(auth_failures_allowed=1)
    codes = {app.github(fresh_push()).status_code for _ in range(30)}
    assert codes == {202}


def test_forwarded_for_is_believed_only_from_trusted_proxies(serve: Callable[..., Served]) -> None:
    trusting = serve(auth_failures_allowed=1, trusted_proxies="10.0.0.0/8, 127.0.0.1")
    assert [bad(trusting, "203.0.113.7") for _ in range(3)] == [401, 429, 429]
    # Another client behind the same proxy is still heard.
    assert bad(trusting, "198.51.100.2") == 401
    untrusting = serve(auth_failures_allowed=1)
    # Without trust, both are the proxy's own address: the second failure is limited.
    assert [bad(untrusting, "203.0.113.7"), bad(untrusting, "198.51.100.2")] == [401, 429]


def test_ipv6_clients_count_by_their_64() -> None:
    failures = AuthFailures(allowed=1, window=60)
    failures.failed("2001:db8:1:2::1")
    failures.failed("2001:db8:1:2:ffff::9")  # the same /64: one host rotating addresses
    assert failures.retry_after("2001:db8:1:2::77") is not None
    assert failures.retry_after("2001:db8:1:3::1") is None


def test_a_body_that_never_arrives_is_cut_off(
    serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "BODY_DEADLINE", 0.5)
    app = serve(max_body_bytes=CAP)
    request = (
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: 1000\r\n\r\n{{"
    )
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(request.encode())  # one byte of a thousand, then nothing
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer


def test_deeply_nested_json_is_a_bad_request(serve: Callable[..., Served]) -> None:
    app = serve()
    assert app.github(b"[" * 100_000 + b"]" * 100_000).status_code == 400


@pytest.mark.parametrize("trusted_proxies", ["", "127.0.0.1"])
def test_a_bare_uvicorn_cannot_be_talked_into_new_addresses(
    tmp_path: Path, trusted_proxies: str
) -> None:
    """`uvicorn --factory service.app:create_app` keeps uvicorn's proxy headers on: it puts
    an address from X-Forwarded-For in place of the loopback peer's. Rotating that header
    must not give a client that keeps failing a fresh allowance each time."""
    env = {"ROLLHOOK_AUTH_FAILURES_ALLOWED": "2", "ROLLHOOK_TRUSTED_PROXIES": trusted_proxies}
    with bare_uvicorn(tmp_path, **env) as (url, log), httpx.Client(base_url=url) as client:

        def guess(n: int, token: str = WRONG) -> int:
            headers = {"authorization": f"Bearer {token}", "x-forwarded-for": f"203.0.113.{n}"}
            return client.get("/targets", headers=headers).status_code

        assert [guess(n) for n in range(1, 6)] == [401, 401, 429, 429, 429]
        hook = {"x-forwarded-for": "198.51.100.9", "x-hub-signature-256": "sha256=" + "0" * 64}
        assert client.post("/hooks/github", content=b"{}", headers=hook).status_code == 429
        assert guess(6, API_TOKEN) == 200  # the right token is still heard
        # A client without the header is known by its own address: not limited.
        wrong = {"authorization": f"Bearer {WRONG}"}
        assert client.get("/targets", headers=wrong).status_code == 401
    assert "share one address for the auth-failure limit" in log.read_text()
