"""Commit statuses on GitHub (or GitHub Enterprise): ``pending`` while deploying, then
``success`` or ``failure``, under the context ``rollhook/<target>``; and the notifier that
sets them for a deployment notice.

``POST {api}/repos/{owner}/{repo}/statuses/{sha}``. GitHub caps the description at 140
characters and refuses longer ones (422), so it is cut here. A 403 or 429 with rate-limit
headers is GitHub asking us to wait; other 4xx answers are configuration problems.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import httpx

from rollhook.targets import repo_key
from workers.notify import wording
from workers.notify.channels import Channel, Delivery
from workers.notify.errors import PermanentError, TransientError
from workers.notify.notices import DeploymentNotice, Notice

State = Literal["pending", "success", "failure", "error"]
DESCRIPTION_CHARS = 140


def github_repo(repo_url: str) -> tuple[str, str] | None:
    """``https://github.com/acme/llm-infra.git`` -> ``("acme", "llm-infra")``."""
    parts = repo_key(repo_url).split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[1], parts[2]


def _wait_hint(response: httpx.Response) -> float | None:
    if "retry-after" in response.headers:
        try:
            return float(response.headers["retry-after"])
        except ValueError:
            return None
    if response.headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(1.0, float(response.headers["x-ratelimit-reset"]) - time.time())
        except (KeyError, ValueError):
            return None
    return None


class CommitStatuses:
    """Set a commit's status for one context."""

    def __init__(self, token: str, api_url: str, timeout: float = 10.0) -> None:
        self._api = api_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "rollhook",
        }
        self._timeout = timeout

    def set(
        self,
        owner: str,
        repo: str,
        sha: str,
        *,
        state: State,
        description: str,
        context: str,
        target_url: str | None = None,
    ) -> None:
        url = f"{self._api}/repos/{owner}/{repo}/statuses/{sha}"
        body: dict[str, str] = {
            "state": state,
            "description": description[:DESCRIPTION_CHARS],
            "context": context,
        }
        if target_url:
            body["target_url"] = target_url
        try:
            with httpx.Client(timeout=self._timeout) as client:
                response = client.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"github status: {type(exc).__name__}") from exc
        if response.status_code in (200, 201):
            return
        message = _message(response)
        what = f"github status: HTTP {response.status_code} {message}"
        wait = _wait_hint(response)
        if response.status_code == 429 or (response.status_code == 403 and wait is not None):
            raise TransientError(what, wait)
        if response.status_code >= 500:
            raise TransientError(what)
        raise PermanentError(what)


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:120]
    return str(data.get("message", ""))[:120] if isinstance(data, dict) else ""


@dataclass(frozen=True)
class CommitStatusNotifier:
    """The deployment's commit marked ``pending`` when it starts, then how it ended."""

    statuses: CommitStatuses
    channel: ClassVar[Channel] = "github"
    tells_progress: ClassVar[bool] = True

    def send(self, notice: Notice, delivery: Delivery) -> str:
        if not isinstance(notice, DeploymentNotice):
            raise PermanentError("commit statuses tell deployments only (no commit here)")
        report = notice.report
        state = delivery.spec.get("state")
        if state not in ("pending", "success", "failure", "error"):
            raise PermanentError(f"github status: unknown state {state!r}")
        sent = list(delivery.sent.get("states") or [])
        if state in sent:
            return f"{state} already set"
        owner, repo = delivery.spec["repo"]
        self.statuses.set(
            owner,
            repo,
            str(report.commit),
            state=state,
            description=wording.headline(report, notice.view),
            context=f"rollhook/{report.target}",
        )
        delivery.keep({"states": [*sent, state]})
        return f"commit status {state} on {report.short_commit}"
