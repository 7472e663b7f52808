"""Local stand-ins for Slack's Web API, Slack incoming webhooks and GitHub's statuses API.

They run on 127.0.0.1 in a thread (``tests.harness.loopback``) and check requests the
way the real services do (token, channel, block structure and limits), keep what they
accepted as state that tests read (messages with their updates and thread replies;
commit statuses), and can be told to misbehave: answer ``ok: false``, 429 with
``Retry-After``, or go down entirely.

Reusable from any test::

    from tests.workers.notify.standins import GitHubStandIn, SlackStandIn

    with SlackStandIn(token="xoxb-test", channels={"deploys": "C0DEPLOYS"}) as slack:
        settings = load_settings(slack_token="xoxb-test", slack_channel="deploys",
                                 slack_api_url=slack.api_url)
        ...
        assert slack.messages[0].updates
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.harness.loopback import Answer, LoopbackServer
from tests.workers.notify.blockkit import check_message


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


@dataclass
class Fault:
    """A planned misbehaviour for the next ``times`` matching requests."""

    status: int
    body: Any
    headers: dict[str, str]
    times: int
    path: str | None  # only requests whose path ends with this


class WebApiStandIn(LoopbackServer):
    """A web API on loopback that can be told to misbehave; subclasses answer ``handle``."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.requests: list[tuple[float, str, str]] = []  # (time, method, path)
        # Called with the path before each request is answered (outside the lock): lets a
        # test make something happen "while the request is in flight".
        self.on_request: Callable[[str], None] | None = None

    # -- misbehaviour -------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: Any,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        with self._lock:
            self._faults.append(Fault(status, body, headers or {}, times, path))

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if self.on_request is not None:
            self.on_request(path)
        with self._lock:
            self.requests.append((time.time(), method, path))
            for fault in self._faults:
                if fault.times > 0 and (fault.path is None or path.endswith(fault.path)):
                    fault.times -= 1
                    payload = fault.body
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    kind = "text/html" if isinstance(payload, bytes) else "application/json"
                    return fault.status, {"Content-Type": kind, **fault.headers}, data
            return self.handle(path, {k.lower(): v for k, v in headers.items()}, body)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError


@dataclass
class SlackMessage:
    channel: str
    ts: str
    text: str  # "" when the request had none
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    at: float
    updates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current_text(self) -> str:
        return str(self.updates[-1]["text"] or "") if self.updates else self.text

    @property
    def current_blocks(self) -> list[dict[str, Any]] | None:
        return self.updates[-1]["blocks"] if self.updates else self.blocks


class SlackStandIn(WebApiStandIn):
    """``/api/chat.postMessage``, ``/api/chat.update``, ``/services/...`` webhooks and
    ``/actions/...`` (an interaction's response_url)."""

    def __init__(
        self,
        token: str = "xoxb-rollhook-test",  # noqa: S107 - the stand-in's own test token
        channels: dict[str, str] | None = None,
        webhook_channel: str = "C0DEPLOYS",
    ) -> None:
        super().__init__()
        self.token = token
        self.channels = channels or {"deploys": "C0DEPLOYS"}
        self.messages: list[SlackMessage] = []
        # What was POSTed to an interaction's response_url: (path, JSON body).
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.webhook_path = "/services/T0ROLLHOOK/B0ROLLHOOK/s3cr3tw3bh00kpath"
        self.webhook_channel = webhook_channel
        self._ts = itertools.count(1)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return self.url + self.webhook_path

    def rate_limit_next(
        self, retry_after: int = 1, times: int = 1, path: str | None = None
    ) -> None:
        body: Any = {"ok": False, "error": "ratelimited"}
        if path is not None and path.startswith("/services/"):
            body = b"rate_limited"
        self.fail_next(429, body, times=times, headers={"Retry-After": str(retry_after)}, path=path)

    def error_next(self, error: str, times: int = 1, path: str | None = None) -> None:
        """``ok: false`` with HTTP 200, as Slack answers most errors."""
        self.fail_next(200, {"ok": False, "error": error}, times=times, path=path)

    # -- what tests read ----------------------------------------------------------------

    def top_level(self) -> list[SlackMessage]:
        return [m for m in self.messages if m.thread_ts is None]

    def replies(self, ts: str) -> list[SlackMessage]:
        return [m for m in self.messages if m.thread_ts == ts]

    # -- Slack's behaviour --------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == self.webhook_path:
            return self._webhook(headers, body)
        if path.startswith("/actions/"):
            return self._response_url(path, headers, body)
        if path.startswith("/services/"):
            return 404, {"Content-Type": "text/html"}, b"no_service"
        method = path.removeprefix("/api/").split("?")[0]
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "chat.postMessage": self._post,
            "chat.update": self._update,
        }
        if method not in handlers:
            return _json(404, {"ok": False, "error": "unknown_method"})
        return _json(200, self._authorised(headers, body, handlers[method]))

    def _authorised(
        self,
        headers: dict[str, str],
        body: bytes,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """Slack answers auth and parse problems with HTTP 200 and ``ok: false``."""
        auth = headers.get("authorization", "")
        if not auth:
            return {"ok": False, "error": "not_authed"}
        if auth != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        try:
            args = _arguments(headers, body)
        except ValueError:
            return {"ok": False, "error": "invalid_json"}
        return handler(args)

    def _channel_id(self, name: str, *, ids_only: bool) -> str | None:
        if name in self.channels.values():
            return name
        return None if ids_only else self.channels.get(name.lstrip("#"))

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(args.get("channel") or ""), ids_only=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        problem = check_message(args.get("text"), args.get("blocks"))
        if problem:
            return {"ok": False, "error": problem}
        thread_ts = args.get("thread_ts")
        if thread_ts is not None and not any(
            m.ts == thread_ts and m.channel == channel for m in self.messages
        ):
            return {"ok": False, "error": "thread_not_found"}
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = SlackMessage(
            channel, ts, args.get("text") or "", args.get("blocks"), thread_ts, time.time()
        )
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message.text}}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        # chat.update wants the channel ID Slack gave back, not a name.
        channel = self._channel_id(str(args.get("channel") or ""), ids_only=True)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        problem = check_message(args.get("text"), args.get("blocks"))
        if problem:
            return {"ok": False, "error": problem}
        for message in self.messages:
            if message.channel == channel and message.ts == args.get("ts"):
                change = {"text": args.get("text"), "blocks": args.get("blocks"), "at": time.time()}
                message.updates.append(change)
                return {"ok": True, "channel": channel, "ts": message.ts, "text": args.get("text")}
        return {"ok": False, "error": "message_not_found"}

    def response_url(self, tail: str = "1234/abcd") -> str:
        """A response_url as Slack puts one in an interaction payload."""
        return f"{self.url}/actions/T0ROLLHOOK/{tail}"

    def _response_url(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Slack takes JSON with a text (or blocks) and answers ``ok``."""
        if not headers.get("content-type", "").startswith("application/json"):
            return 400, {"Content-Type": "text/html"}, b"invalid_payload"
        try:
            args = json.loads(body)
        except ValueError:
            return 400, {"Content-Type": "text/html"}, b"invalid_payload"
        problem = check_message(args.get("text"), args.get("blocks"))
        if problem or not isinstance(args, dict):
            return 400, {"Content-Type": "text/html"}, (problem or "invalid_payload").encode()
        self.responses.append((path, args))
        return 200, {"Content-Type": "text/html"}, b"ok"

    def _webhook(self, headers: dict[str, str], body: bytes) -> Answer:
        try:
            args = json.loads(body)
        except ValueError:
            return 400, {"Content-Type": "text/html"}, b"invalid_payload"
        problem = check_message(args.get("text"), args.get("blocks"))
        if problem:
            return 400, {"Content-Type": "text/html"}, problem.encode()
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        self.messages.append(
            SlackMessage(
                self.webhook_channel,
                ts,
                args.get("text") or "",
                args.get("blocks"),
                None,
                time.time(),
            )
        )
        return 200, {"Content-Type": "text/html"}, b"ok"


def _arguments(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """Slack takes JSON bodies and form bodies (with ``blocks`` as a JSON string)."""
    if headers.get("content-type", "").startswith("application/json"):
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    if "blocks" in form:
        form["blocks"] = json.loads(form["blocks"])
    return form


@dataclass
class CommitStatus:
    owner: str
    repo: str
    sha: str
    state: str
    context: str
    description: str
    target_url: str | None
    at: float


_STATUS_PATH = re.compile(r"^/repos/([\w.-]+)/([\w.-]+)/statuses/([0-9a-f]{40})$")


class GitHubStandIn(WebApiStandIn):
    """``POST /repos/{owner}/{repo}/statuses/{sha}``, the way GitHub checks it."""

    def __init__(
        self,
        token: str = "ghp_rollhooktest",  # noqa: S107 - the stand-in's own test token
        repos: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.repos = repos or {"acme/llm-infra"}
        self.statuses: list[CommitStatus] = []

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        auth = headers.get("authorization", "")
        if not auth:
            return _json(401, {"message": "Requires authentication"})
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return _json(401, {"message": "Bad credentials"})
        match = _STATUS_PATH.match(path)
        if match is None or f"{match[1]}/{match[2]}" not in self.repos:
            return _json(404, {"message": "Not Found"})
        try:
            data = json.loads(body)
        except ValueError:
            return _json(400, {"message": "Problems parsing JSON"})
        state, description = data.get("state"), data.get("description") or ""
        if state not in ("error", "failure", "pending", "success") or len(description) > 140:
            return _json(422, {"message": "Validation Failed"})
        status = CommitStatus(
            match[1],
            match[2],
            match[3],
            state,
            data.get("context") or "default",
            description,
            data.get("target_url"),
            time.time(),
        )
        self.statuses.append(status)
        return _json(201, {"state": state, "context": status.context, "description": description})
