"""Body size caps (declared and streamed) and the auth-failure rate limit, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

from service.signatures import hub_signature
from tests.service.support import GITHUB_SECRET, Served, encode, payload

CAP = 16384


def body_of(size: int) -> bytes:
    doc = payload("github-push.json")
    doc["padding"] = ""
    base = len(encode(doc))
    doc["padding"] = "x" * max(0, size - base)
    return encode(doc)


def test_declared_length_over_the_cap_is_refused_before_reading(
    serve: Callable[..., Served],
) -> None:
    app = serve(max_body_bytes=CAP)
    # Announce 100 MB and send none of it: the answer must not wait for the body.
    request = (
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "X-GitHub-Event: push\r\nContent-Length: 104857600\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer


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
    # Size is checked before auth: an unsigned oversized body is a 413, not a 401.
    response = app.client.post(
        "/hooks/github", content=too_big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def bad(app: Served, forwarded: str | None = None) -> int:
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-hub-signature-256": "sha256=00",
    }
    if forwarded:
        headers["x-forwarded-for"] = forwarded
    return app.client.post("/hooks/github", content=b"{}", headers=headers).status_code


def test_clients_that_keep_failing_are_limited(serve: Callable[..., Served]) -> None:
    app = serve(auth_failures_allowed=2, auth_failure_window=60)
    assert [bad(app) for _ in range(3)] == [401, 401, 401]
    limited = app.github(encode(payload("github-push.json")))  # even a right signature waits
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["status"] == "too_many_requests"
    # The API's bearer token counts too, and answers 429 the same way.
    assert app.api("GET", "/targets").status_code == 429


def test_senders_with_the_right_secret_are_never_limited(serve: Callable[..., Served]) -> None:
    app = serve(auth_failures_allowed=1)
    codes = {app.github(encode(payload("github-push.json"))).status_code for _ in range(30)}
    assert codes == {202}


def test_forwarded_for_is_believed_only_from_trusted_proxies(serve: Callable[..., Served]) -> None:
    trusting = serve(auth_failures_allowed=1, trusted_proxies="10.0.0.0/8, 127.0.0.1")
    assert [bad(trusting, "203.0.113.7") for _ in range(3)] == [401, 401, 429]
    # Another client behind the same proxy is still heard.
    assert bad(trusting, "198.51.100.2") == 401
    untrusting = serve(auth_failures_allowed=1)
    assert [bad(untrusting, "203.0.113.7"), bad(untrusting, "198.51.100.2")] == [401, 401]
    # Without trust, both were the proxy's own address: now it is limited.
    assert bad(untrusting, "192.0.2.1") == 429
