"""``rollhook send-test-hook NAME``: a signed GitHub push for a target, as GitHub sends it.

The target's repo URL and branch come from the running rollhook (``GET /targets``), the
secret from the settings (``ROLLHOOK_GITHUB_SECRET``, the first one during a rotation).
The body is the minimal push rollhook reads (README, "A signed push with curl"), plus the
moment it was made: rollhook treats the same signed body twice as one event, so a test
hook sent again must differ.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from cli import output
from cli.api import ApiError, Client, follow
from rollhook.settings import Settings

PLACEHOLDER_HEAD = "f" * 40  # when the branch head cannot be read from here


def push_body(repo: str, branch: str, head: str, sent_at: datetime) -> bytes:
    """The push: ``repository.clone_url`` is what rollhook matches to a target's repo."""
    document: dict[str, Any] = {
        "ref": f"refs/heads/{branch}",
        "after": head,
        "repository": {"clone_url": repo},
        "pusher": {"name": "rollhook send-test-hook"},
        "head_commit": {"id": head, "timestamp": sent_at.isoformat(timespec="seconds")},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signed_headers(body: bytes, secret: str, delivery: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def branch_head(repo: str, branch: str) -> str | None:
    """The branch's head as ``git ls-remote`` sees it from here (None: not readable)."""
    try:
        done = subprocess.run(
            ["git", "ls-remote", "--", repo, f"refs/heads/{branch}"],
            capture_output=True, text=True, timeout=15, check=False,
            env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    head = done.stdout.split("\t", 1)[0].strip()
    return head if done.returncode == 0 and len(head) == 40 else None


def send_test_hook(args: argparse.Namespace, settings: Settings) -> int:
    if settings.github_secret is None:
        print(
            "rollhook: ROLLHOOK_GITHUB_SECRET is not set (make run writes it to "
            "data/secrets/github_secret)",
            file=sys.stderr,
        )
        return output.USAGE
    url = args.url or f"http://127.0.0.1:{settings.port}"
    token = settings.api_token.get_secret_value() if settings.api_token else None
    client = Client(url, token)
    try:
        targets = client.call("GET", "/targets").get("targets") or []
        target = next((t for t in targets if t.get("name") == args.target), None)
        if target is None:
            known = ", ".join(t.get("name", "?") for t in targets) or "none"
            raise ApiError(f"unknown target {args.target!r} (configured: {known})", output.USAGE)
        repo, branch = target["repo"], target["branch"]
        head = branch_head(repo, branch) or PLACEHOLDER_HEAD
        body = push_body(repo, branch, head, datetime.now(UTC))
        secret = settings.github_secret.get_secret_value().split(",")[0].strip()
        delivery = str(uuid.uuid4())
        print(f"POST {url}/hooks/github: push of {branch} at {head[:12]} to {repo}", flush=True)
        try:
            answer = client.http.post(
                "/hooks/github", content=body, headers=signed_headers(body, secret, delivery)
            )
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach rollhook at {url}: {exc}") from exc
        document = answer.json() if answer.content else {}
        print(f"{answer.status_code} {json.dumps(document)}", flush=True)
        if answer.status_code != 202:  # ignored (paused, say) or refused: nothing deploys
            return output.FAILED
        return follow(client, document["id"]) if args.wait else output.OK
    except ApiError as exc:
        print(f"rollhook: {exc}", file=sys.stderr)
        return exc.code
