"""Bare git repositories served over smart HTTP on 127.0.0.1, standing in for GitHub.

``git http-backend`` runs as a CGI behind a small threaded HTTP server. A repository may
require a token: HTTP basic auth, any user name, the token as password (how GitHub and
GitLab take a personal access token). Fetch and push both work over HTTP; the helpers
below commit through the file system, which needs no credentials.
"""

from __future__ import annotations

import base64
import hmac
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness.process import run

# A git environment that ignores the machine's and the user's configuration.
_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_COMMITTER_NAME": "rollhook tests",
    "GIT_COMMITTER_EMAIL": "tests@example.test",
}


def git_env() -> dict[str, str]:
    return {**os.environ, **_GIT_ENV}


@dataclass
class Request:
    """One request the server answered, for tests that check what a client did."""

    method: str
    path: str
    status: int
    user: str | None


@dataclass
class InfraRepo:
    name: str
    url: str
    bare: Path
    work: Path
    token: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def authed_url(self) -> str:
        """The URL with credentials embedded (for a plain `git clone` in a test)."""
        if self.token is None:
            return self.url
        return self.url.replace("http://", f"http://git:{self.token}@", 1)

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return run(["git", *args], cwd=cwd or self.work, env=git_env()).strip()

    def commit(
        self,
        files: dict[str, str | None],
        message: str = "update",
        author: str = "Test <test@example.test>",
        branch: str = "main",
        signing: tuple[str, ...] = (),
    ) -> str:
        """Write (or, for None, delete) files, commit on ``branch`` and push; return the sha.

        The commit goes on top of whatever the server holds now, so it follows force-pushes
        made by tests. An empty change still makes a commit (a push that changes nothing).
        ``signing``: git config (``-c`` pairs, say gpg.format and user.signingKey) under
        which the commit is signed (``-S``); none, unsigned.
        """
        with self._lock:
            self._git("fetch", "-q", "--prune", "origin")
            remote = self._git("branch", "-r", "--list", f"origin/{branch}")
            if remote:
                self._git("checkout", "-q", "-f", "-B", branch, f"origin/{branch}")
            elif self._git("branch", "--show-current") != branch:
                self._git("checkout", "-q", "-f", "-B", branch)
            for path, content in files.items():
                target = self.work / path
                if content is None:
                    target.unlink(missing_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(content)
            self._git("add", "-A")
            sign = ("-S",) if signing else ()
            self._git(
                *signing, "commit", "-q", *sign, "--allow-empty", "-m", message,
                f"--author={author}",
            )  # fmt: skip
            self._git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
            return self._git("rev-parse", "HEAD")

    def force_push_reset(self, sha: str, branch: str = "main") -> None:
        """Move ``branch`` on the server to ``sha``, as `git push --force` would.

        Commit afterwards to replace the dropped commits with a different history.
        """
        with self._lock:
            self._git("update-ref", f"refs/heads/{branch}", sha, cwd=self.bare)

    def delete_branch(self, branch: str) -> None:
        with self._lock:
            self._git("update-ref", "-d", f"refs/heads/{branch}", cwd=self.bare)

    def head(self, branch: str = "main") -> str:
        return self._git("rev-parse", f"refs/heads/{branch}", cwd=self.bare)


class GitServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.repos_dir = root / "repos"
        self.work_dir = root / "work"
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.tokens: dict[str, str] = {}  # "<name>.git" -> token
        self.requests: list[Request] = []
        self.delay = 0.0  # seconds each request waits before it is served (a slow server)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._names_lock = threading.Lock()

    def start(self) -> None:
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        server = self

        class Handler(_GitHandler):
            git_server = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="git-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def create_repo(self, name: str, token: str | None = None) -> InfraRepo:
        """A new bare repository at ``<base_url>/<name>.git`` (token: require it to fetch/push).

        The server lives for the whole session: if ``name`` is taken (by another test), a
        suffix makes it unique, so read the URL from the returned repository.
        """
        with self._names_lock:
            unique, n = name, 1
            while (self.repos_dir / f"{unique}.git").exists():
                n += 1
                unique = f"{name}-{n}"
            name = unique
            bare = self.repos_dir / f"{name}.git"
            bare.mkdir(parents=True)
            if token is not None:
                self.tokens[bare.name] = token  # before it holds anything to fetch
        env = git_env()
        run(["git", "init", "-q", "--bare", "-b", "main", bare], env=env)
        # Pushes over HTTP are allowed without an authenticated user (tests force-push).
        run(["git", "-C", bare, "config", "http.receivepack", "true"], env=env)
        work = self.work_dir / name
        run(["git", "init", "-q", "-b", "main", work], env=env)
        run(["git", "-C", work, "remote", "add", "origin", bare], env=env)
        return InfraRepo(name, f"{self.base_url}/{name}.git", bare, work, token)


class _GitHandler(BaseHTTPRequestHandler):
    git_server: GitServer
    # One request per connection: git copes, and the handler needs no keep-alive logic.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are recorded in git_server.requests instead of stderr

    def _serve(self) -> None:
        if self.git_server.delay:
            time.sleep(self.git_server.delay)
        url = urlsplit(self.path)
        repo = next((part for part in url.path.split("/") if part.endswith(".git")), "")
        allowed, user = self._authorize(self.git_server.tokens.get(repo))
        if not allowed:
            self._answer(HTTPStatus.UNAUTHORIZED, b"authentication required\n", None)
            return
        body = self._read_body()
        env = {
            **git_env(),
            "GIT_PROJECT_ROOT": str(self.git_server.repos_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        if user is not None:
            env["REMOTE_USER"] = user
        for header, variable in (
            ("Git-Protocol", "GIT_PROTOCOL"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ):
            if header in self.headers:
                env[variable] = self.headers[header]
        result = subprocess.run(
            ["git", "http-backend"],
            input=body,
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = HTTPStatus.OK
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = HTTPStatus(int(value.split()[0]))
            elif name:
                headers.append((name, value.strip()))
        if result.returncode != 0 and not head:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            payload = result.stderr
        self._answer(status, payload, user, headers)

    def _authorize(self, token: str | None) -> tuple[bool, str | None]:
        """(allowed, authenticated user name); no token means anyone may fetch and push."""
        if token is None:
            return True, None
        scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False, None
        if not hmac.compare_digest(password.encode(), token.encode()):
            return False, None
        return True, user or "git"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(
        self,
        status: HTTPStatus,
        payload: bytes,
        user: str | None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.git_server.requests.append(Request(self.command, self.path, status.value, user))
        self.send_response(status)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="rollhook-tests"')
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
