"""Forged webhooks, generated: for every source, no mutation of a signed body, of the header
that carries the signature or token, or of the secret itself is accepted.

Each case is one request to the real app (``create_app``, its records and embedded broker,
served in-process over ASGI: no sockets, so thousands of cases take seconds). A forgery must
be refused at authentication (401; 404 for a Docker Hub token that no longer names the
route) and leave no event behind. The genuine request is accepted first, so a refusal is
never the app refusing everything. The auth-failure limit is lifted: what is tested is the
check of the credential, not the limiter in front of it.

What counts as the same credential is what PRODUCT.md documents, and only that: the
signature's ``sha256=`` prefix and hex digits in any case, whitespace around a header value,
the ``Bearer`` scheme in any case; HMAC's own padding of a short key with NUL bytes makes
``secret + b"\\0"`` the same key and is not a forgery either.

Figures (README, "Fault suite"): ``CASES`` per test below; the count of tests times
``CASES`` is the number of generated cases, every one refused.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from rollhook.records import db
from rollhook.records.schema import events
from service.app import create_app
from service.signatures import hub_signature
from tests.service.support import (
    DOCKERHUB_TOKEN,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    HARBOR_TOKEN,
    REGISTRY_TOKEN,
    make_settings,
    payload,
)

pytestmark = pytest.mark.fault

# Per test; 9 tests: 10,800 generated cases (fewer for a quick local run).
CASES = int(os.environ.get("ROLLHOOK_FORGERY_CASES", "1200"))
CASE_SETTINGS = settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class App:
    """The app in-process: its lifespan run once, then each request one ASGI call with the
    lifespan's state, as a server makes it, on one event loop."""

    def __init__(self, root: Path) -> None:
        self.settings = make_settings(root, auth_failures_allowed=10**9)
        self.app = create_app(self.settings)
        self.records: Engine = db.make_engine(self.settings.records_url())
        self.loop = asyncio.Runner()
        self.state: dict[str, Any] = {}
        self.to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lifespan: asyncio.Task[None] | None = None

    async def _lifespan(self, event: str) -> None:
        if self.lifespan is None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
            self.lifespan = asyncio.ensure_future(
                self.app(scope, self.to_app.get, self.from_app.put)
            )
        await self.to_app.put({"type": f"lifespan.{event}"})
        answer = await self.from_app.get()
        assert answer["type"] == f"lifespan.{event}.complete", answer
        if event == "shutdown":
            await self.lifespan

    def start(self) -> App:
        self.loop.run(self._lifespan("startup"))
        return self

    def stop(self) -> None:
        self.loop.run(self._lifespan("shutdown"))
        self.loop.close()
        self.records.dispose()

    def events(self) -> int:
        with self.records.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def post(self, path: str, body: bytes, headers: dict[str, bytes]) -> int:
        """POST ``body`` to ``path`` (decoded, as a server hands it on) and the status."""
        return self.loop.run(self._post(path, body, headers))

    async def _post(self, path: str, body: bytes, headers: dict[str, bytes]) -> int:
        sent = [(k.encode(), v) for k, v in headers.items()]
        sent.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": quote(path, safe="/").encode(),
            "query_string": b"",
            "root_path": "",
            "headers": sent,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": dict(self.state),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        return status[0]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    served = App(tmp_path_factory.mktemp("forgeries")).start()
    yield served
    served.stop()


# -- mutations ----------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` changed in one of the ways an attacker would try (never unchanged)."""
    kind = draw(
        st.sampled_from(["flip", "replace", "insert", "delete", "truncate", "append", "case"])
    )
    size = len(original)
    at = draw(st.integers(0, max(size - 1, 0)))
    if kind == "flip" and size:
        bit = draw(st.integers(0, 7))
        result = original[:at] + bytes([original[at] ^ (1 << bit)]) + original[at + 1 :]
    elif kind == "replace" and size:
        result = original[:at] + draw(st.binary(min_size=1, max_size=4)) + original[at + 1 :]
    elif kind == "insert":
        result = original[:at] + draw(st.binary(min_size=1, max_size=8)) + original[at:]
    elif kind == "delete" and size:
        end = draw(st.integers(at + 1, size))
        result = original[:at] + original[end:]
    elif kind == "truncate":
        result = original[:at]
    elif kind == "case":
        result = original.swapcase()
    else:
        result = original + draw(st.binary(min_size=1, max_size=8))
    assume(result != original)
    return result


def tokens(real: str) -> st.SearchStrategy[bytes]:
    """A token near the real one (mutated), or anything at all."""
    return st.one_of(mutated(real.encode()), st.binary(max_size=64))


def _text(value: bytes) -> str:
    return value.decode("latin-1")  # as the app reads a header


def is_token(value: bytes, real: str) -> bool:
    return value == real.encode()


def is_bearer(value: bytes, real: str) -> bool:
    scheme, _, token = _text(value).strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip() == real


def same_signature(value: bytes, real: str) -> bool:
    return _text(value).strip().lower() == real.lower()


# -- GitHub and Gitea: an HMAC of the raw body ---------------------------------------------

FLAVOURS = {
    "github": ("github-push.json", {"x-github-event": b"push", "x-github-delivery": b"g-1"}),
    "gitea": ("gitea-push.json", {"x-gitea-event": b"push", "x-gitea-delivery": b"t-1"}),
}


def signed(flavour: str, *, nonce: str = "") -> tuple[bytes, dict[str, bytes]]:
    """A push of ``flavour``'s and the headers its sender signs it with."""
    name, event_headers = FLAVOURS[flavour]
    body = json.dumps(payload(name) | {"after": nonce or "1" * 40}).encode()
    headers = {"content-type": b"application/json"} | event_headers
    headers["x-hub-signature-256"] = hub_signature(GITHUB_SECRET.encode(), body).encode()
    return body, headers


def genuine_accepted(app: App, path: str, body: bytes, headers: dict[str, bytes]) -> None:
    status = app.post(path, body, headers)
    assert 200 <= status < 300, f"the genuine request to {path} was refused: {status}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_signed_body_changed_in_any_way_is_refused(app: App, flavour: str) -> None:
    genuine_accepted(app, "/hooks/github", *signed(flavour, nonce="a" * 40))
    body, headers = signed(flavour)
    before = app.events()

    @CASE_SETTINGS
    @given(forged=mutated(body))
    def case(forged: bytes) -> None:
        assert app.post("/hooks/github", forged, headers) == 401

    case()
    assert app.events() == before


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_signature_header_changed_in_any_way_is_refused(app: App, flavour: str) -> None:
    body, headers = signed(flavour, nonce="b" * 40)
    real = headers["x-hub-signature-256"].decode()
    sha1 = hub_signature(GITHUB_SECRET.encode(), body).encode()  # the same digest, renamed
    other = st.sampled_from(
        [b"", b"sha256=", sha1.replace(b"sha256=", b"sha1="), real.encode()[7:]]
    )
    before = app.events()

    @CASE_SETTINGS
    @given(forged=st.one_of(mutated(real.encode()), other, st.binary(max_size=80)))
    def case(forged: bytes) -> None:
        assume(not same_signature(forged, real))
        assert app.post("/hooks/github", body, headers | {"x-hub-signature-256": forged}) == 401

    case()
    assert app.events() == before
    genuine_accepted(app, "/hooks/github", body, headers)  # the body itself was never at fault


def test_a_body_signed_with_any_other_secret_is_refused(app: App) -> None:
    body, headers = signed("github", nonce="c" * 40)
    before = app.events()

    @CASE_SETTINGS
    @given(key=tokens(GITHUB_SECRET))
    def case(key: bytes) -> None:
        # HMAC pads a short key with NULs: secret + b"\0" is the secret itself.
        assume(key.rstrip(b"\0") != GITHUB_SECRET.encode())
        forged = headers | {"x-hub-signature-256": hub_signature(key, body).encode()}
        assert app.post("/hooks/github", body, forged) == 401

    case()
    assert app.events() == before


# -- the token sources ----------------------------------------------------------------------


def test_a_gitlab_token_changed_in_any_way_is_refused(app: App) -> None:
    body = json.dumps(payload("gitlab-push.json")).encode()
    headers = {"content-type": b"application/json", "x-gitlab-event": b"Push Hook"}
    genuine_accepted(
        app, "/hooks/gitlab", body, headers | {"x-gitlab-token": GITLAB_TOKEN.encode()}
    )
    before = app.events()

    @CASE_SETTINGS
    @given(forged=tokens(GITLAB_TOKEN))
    def case(forged: bytes) -> None:
        assume(not is_token(forged, GITLAB_TOKEN))
        assert app.post("/hooks/gitlab", body, headers | {"x-gitlab-token": forged}) == 401

    case()
    assert app.events() == before


def authorizations(real: str) -> st.SearchStrategy[bytes]:
    """``Authorization`` values: a mutated token under the right scheme, the right token
    under a mutated scheme, the whole header mutated, or anything at all."""
    right = b"Bearer " + real.encode()
    return st.one_of(
        tokens(real).map(lambda token: b"Bearer " + token),
        mutated(b"Bearer").map(lambda scheme: scheme + b" " + real.encode()),
        mutated(right),
        st.binary(max_size=80),
    )


def test_a_registry_bearer_token_changed_in_any_way_is_refused(app: App) -> None:
    body = json.dumps(payload("distribution-push.json")).encode()
    headers = {"content-type": b"application/vnd.docker.distribution.events.v2+json"}
    genuine_accepted(
        app,
        "/hooks/registry",
        body,
        headers | {"authorization": f"Bearer {REGISTRY_TOKEN}".encode()},
    )
    before = app.events()

    @CASE_SETTINGS
    @given(forged=authorizations(REGISTRY_TOKEN))
    def case(forged: bytes) -> None:
        assume(not is_bearer(forged, REGISTRY_TOKEN))
        assert app.post("/hooks/registry", body, headers | {"authorization": forged}) == 401

    case()
    assert app.events() == before


def test_a_harbor_auth_header_changed_in_any_way_is_refused(app: App) -> None:
    body = json.dumps(payload("harbor-push.json")).encode()
    headers = {"content-type": b"application/json"}
    genuine_accepted(app, "/hooks/harbor", body, headers | {"authorization": HARBOR_TOKEN.encode()})
    before = app.events()

    @CASE_SETTINGS
    @given(forged=st.one_of(tokens(HARBOR_TOKEN), authorizations(HARBOR_TOKEN)))
    def case(forged: bytes) -> None:
        bare = _text(forged).strip() == HARBOR_TOKEN
        assume(not bare and not is_bearer(forged, HARBOR_TOKEN))
        assert app.post("/hooks/harbor", body, headers | {"authorization": forged}) == 401

    case()
    assert app.events() == before


def test_a_docker_hub_url_token_changed_in_any_way_is_refused(app: App) -> None:
    body = json.dumps(payload("dockerhub-push.json")).encode()
    headers = {"content-type": b"application/json"}
    genuine_accepted(app, f"/hooks/dockerhub/{DOCKERHUB_TOKEN}", body, headers)
    before = app.events()

    @CASE_SETTINGS
    @given(forged=tokens(DOCKERHUB_TOKEN))
    def case(forged: bytes) -> None:
        token = _text(forged)
        assume(token != DOCKERHUB_TOKEN)
        status = app.post(f"/hooks/dockerhub/{token}", body, headers)
        # A token with a slash, or none, no longer names the route: 404 as any other path,
        # or Starlette's redirect to the path without its trailing slash (not followed).
        assert status == 401 or (status in (404, 307) and ("/" in token or not token)), status

    case()
    assert app.events() == before
