"""Registries that want credentials, over the storage of the harness registry.

- :func:`serve_registry` starts another CNCF Distribution instance over the same storage
  (so it holds every image pushed to the harness registry) with an ``auth`` section:
  ``htpasswd`` (Basic auth) or ``token`` (the Bearer challenge, as Docker Hub's registry
  answers it);
- :class:`TokenService` is the token endpoint such a registry sends clients to, as
  ``auth.docker.io`` is for Docker Hub: anonymous, Basic-authenticated ``GET`` and
  OAuth2 refresh-token ``POST``, answering ``{"token", "access_token", "expires_in"}``
  with a JWT the registry verifies (RS256, signed by ``openssl``, certificate in ``x5c``);
- :class:`RegistryProxy` stands in front of a registry to count requests, hide
  ``Docker-Content-Digest`` on ``HEAD``, answer a fixed error (429, 503), or page tag
  lists (``?n=&last=`` and ``Link: <...>; rel="next"``, as the OCI distribution spec,
  Distribution 3 and Docker Hub do: Debian's Distribution 2.8 ignores ``n`` on tag lists).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
import yaml

from tests.harness.ports import free_port
from tests.harness.process import Daemon, run


@contextmanager
def serve_registry(storage: Path, root: Path, log_dir: Path, auth: dict[str, Any]) -> Iterator[str]:
    """A Distribution registry over ``storage`` with ``auth``; yields its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "auth": auth,
    }
    path = root / f"registry-{port}.yml"
    path.write_text(yaml.safe_dump(config))
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is missing: run scripts/install-test-deps.sh")
    daemon = Daemon(f"registry-{port}", [binary, "serve", path], log_dir / f"registry-{port}.log")
    daemon.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # Any answer (401 included) means it listens.
        daemon.wait_until(lambda: httpx.get(f"{url}/v2/", timeout=2).status_code > 0, "/v2/")
        yield url
    finally:
        daemon.stop()


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry; Distribution takes bcrypt only (cost 4: tests need no strength)."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    method: str
    scope: str
    user: str | None  # who the credentials said; None when anonymous


@dataclass
class TokenService:
    """A token endpoint: ``users`` (name -> password) and ``identity_tokens`` (token ->
    name) may pull; ``anonymous`` decides whether anyone else may."""

    root: Path
    users: dict[str, str] = field(default_factory=dict)
    identity_tokens: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    service: str = "rollhook-test-registry"
    issuer: str = "rollhook-test-issuer"
    lifetime: int = 300
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = self.root / "token.key"
        self.cert = self.root / "token.crt"
        run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=rollhook-test-token", "-keyout", self.key, "-out", self.cert),
            ]
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._httpd: ThreadingHTTPServer | None = None

    def registry_auth(self) -> dict[str, Any]:
        """The ``auth`` section of a registry that trusts this service."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert),
            }
        }

    def start(self) -> None:
        service = self

        class Handler(_TokenHandler):
            token_service = service

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def grant(self, method: str, form: dict[str, str], authorization: str) -> str | None:
        """The token for a request, or None when it is refused."""
        scope = form.get("scope", "")
        user: str | None = None
        if method == "POST":
            if form.get("grant_type") != "refresh_token":
                return None
            user = self.identity_tokens.get(form.get("refresh_token", ""))
            if user is None:
                return None
        elif authorization:
            scheme, _, encoded = authorization.partition(" ")
            name, _, password = base64.b64decode(encoded).decode().partition(":")
            known = self.users.get(name)
            if scheme.lower() != "basic" or known is None:
                return None
            if not hmac.compare_digest(known.encode(), password.encode()):
                return None
            user = name
        elif not self.anonymous:
            return None
        self.requests.append(TokenRequest(method, scope, user))
        return self._sign(scope, user or "")

    def _sign(self, scope: str, subject: str) -> str:
        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":", 2)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
        ).stdout
        token = f"{signing_input}.{_b64url(signature)}"
        self.issued.append(token)
        return token


class _TokenHandler(BaseHTTPRequestHandler):
    token_service: TokenService

    def do_GET(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self._answer("GET", query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self._answer("POST", form)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, method: str, form: dict[str, str]) -> None:
        service = self.token_service
        token = service.grant(method, form, self.headers.get("Authorization", ""))
        if token is None:
            body = json.dumps({"details": "incorrect username or password"}).encode()
            self.send_response(401)
        else:
            answer = {"token": token, "access_token": token, "expires_in": service.lifetime}
            body = json.dumps(answer).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class RegistryProxy:
    """Passes requests on to ``upstream``; records them; can misbehave on request."""

    upstream: str
    hide_digest_on_head: bool = False
    fail_with: tuple[int, dict[str, str]] | None = None  # (status, headers)
    paginate: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        proxy = self

        class Handler(_ProxyHandler):
            registry_proxy = proxy

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    registry_proxy: RegistryProxy

    def do_HEAD(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        proxy = self.registry_proxy
        proxy.requests.append((self.command, self.path))
        if proxy.fail_with is not None:
            status, headers = proxy.fail_with
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if proxy.paginate and urlsplit(self.path).path.endswith("/tags/list"):
            self._page()
            return
        passed = {k: v for k, v in self.headers.items() if k.lower() in {"accept", "authorization"}}
        answer = httpx.request(
            self.command, f"{proxy.upstream}{self.path}", headers=passed, timeout=10
        )
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() in {"content-length", "transfer-encoding", "connection", "date"}:
                continue
            hidden = proxy.hide_digest_on_head and self.command == "HEAD"
            if hidden and name.lower() == "docker-content-digest":
                continue
            self.send_header(name, value)
        body = answer.content
        self.send_header("Content-Length", answer.headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _page(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        upstream = httpx.get(f"{self.registry_proxy.upstream}{url.path}", timeout=10).json()
        tags = sorted(upstream.get("tags") or [])
        after = query.get("last")
        if after is not None:
            tags = [tag for tag in tags if tag > after]
        size = int(query.get("n") or len(tags) or 1)
        page, more = tags[:size], len(tags) > size
        body = json.dumps({"name": upstream.get("name"), "tags": page}).encode()
        self.send_response(200)
        if more:
            self.send_header("Link", f'<{url.path}?n={size}&last={page[-1]}>; rel="next"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
