"""Log lines: no secret in any spelling, no control character a client chose."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service import logs
from service.logs import RedactTokens, printable, redact_path
from tests.service.support import API_TOKEN, DOCKERHUB_TOKEN, bare_uvicorn

TOKEN = DOCKERHUB_TOKEN


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (f"/hooks/dockerhub/{TOKEN}", "/hooks/dockerhub/<redacted>"),
        (f"/hooks//dockerhub/{TOKEN}", "/hooks//dockerhub/<redacted>"),
        (f"/hooks/dockerhub//{TOKEN}", "/hooks/dockerhub/<redacted>"),
        (f"/hooks/dockerhub/x/{TOKEN}", "/hooks/dockerhub/<redacted>"),
        (f"/HOOKS/DockerHub/{TOKEN}", "/HOOKS/DockerHub/<redacted>"),
        (f"/hooks/dockerhub%2F{TOKEN}", "/hooks/dockerhub/<redacted>"),
        (f"/hooks/dockerhub/{TOKEN}?x=y", "/hooks/dockerhub/<redacted>?<redacted>"),
        (f"/deployments?token={TOKEN}&limit=1", "/deployments?<redacted>"),
        ("/healthz", "/healthz"),
    ],
)
def test_access_log_paths_keep_no_token_and_no_query(path: str, logged: str) -> None:
    assert redact_path(path) == logged


def test_configured_secrets_are_redacted_in_any_url_spelling() -> None:
    secret = "s3cret+with/odd=chars-0123456789"
    logs.install_redaction([secret])
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/x/s3cret%2Bwith/odd%3Dchars-0123456789/y", "1.1", 404),
        None,
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /x/<redacted>/y HTTP/1.1" 404'


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("d-1234", "d-1234"),
        ("a\r\n[github delivery=forged] 202", "a\\r\\n[github delivery=forged] 202"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("a\x85b", "a\\x85b"),  # NEL: a line break to Python's splitlines and some viewers
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("a\u202eb", "a\\u202eb"),  # right-to-left override
        ("a\tb\x00", "a\\tb\\x00"),
        ("back\\x85slash", "back\\\\x85slash"),  # a literal backslash cannot pose as an escape
        ("café", "café"),
    ],
)
def test_printable_escapes_what_could_forge_or_hide_a_line(text: str, escaped: str) -> None:
    assert printable(text) == escaped
    assert printable(text).isprintable()


def _send(url: str, request: bytes) -> str:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(request)
        return sock.recv(4096).decode("latin-1")


def test_the_real_access_log_keeps_no_token_and_no_control_character(tmp_path: Path) -> None:
    """A bare uvicorn, as README's shortest command starts it: the Docker Hub token in
    every spelling a client might use, and header values holding control characters."""
    env = {"ROLLHOOK_DOCKERHUB_TOKEN": TOKEN}
    paths = [
        f"/hooks//dockerhub/{TOKEN}",
        f"/hooks/dockerhub/{TOKEN}?x=y",
        f"/hooks/dockerhub%2F{TOKEN}",
        f"/hooks%2Fdockerhub%2F{TOKEN}",
        f"/hooks/dockerhub/%2F{TOKEN}",
        f"/HOOKS/dockerhub/{TOKEN}",
        f"/hooks/dockerhub/x%252F{TOKEN}",
        f"/deployments?token={TOKEN}",
    ]
    nasty = b"d\x85[github delivery=forged] 202\xe2\x80\xa8\tend"
    with bare_uvicorn(tmp_path, **env) as (url, log):
        for path in paths:
            for method in ("GET", "POST"):
                answer = _send(url, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert answer.startswith("HTTP/1.1 "), answer
        hook = (
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: text/\x85plain\r\n"
            b"X-GitHub-Event: push\r\nX-GitHub-Delivery: " + nasty + b"\r\n"
            b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert _send(url, hook).startswith("HTTP/1.1 401")
        # uvicorn (proxy headers on) puts this in the access log's client field.
        api = (
            b"GET /targets HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\x85forged\r\n"
            b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n\r\n"
        )
        assert _send(url, api).startswith("HTTP/1.1 200")
    output = log.read_bytes().decode("utf-8", errors="replace")
    assert TOKEN not in output
    assert API_TOKEN not in output
    for raw in ("\x85", "\u2028", "\t", "\x1b"):
        assert raw not in output, repr(raw)
    assert "delivery=d\\x85[github delivery=forged] 202" in output
    assert "\\x85forged" in output  # the client field, escaped
