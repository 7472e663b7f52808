"""Fixtures for the notification tests: the stand-ins and a target (``records``: the root
conftest's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollhook.targets import Notify, Target
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn

NOTIFY_ENV = (
    "ROLLHOOK_SLACK_TOKEN",
    "ROLLHOOK_SLACK_CHANNEL",
    "ROLLHOOK_SLACK_API_URL",
    "ROLLHOOK_SLACK_WEBHOOK_URL",
    "ROLLHOOK_SMTP_URL",
    "ROLLHOOK_EMAIL_FROM",
    "ROLLHOOK_EMAIL_TO",
    "ROLLHOOK_GITHUB_TOKEN",
    "ROLLHOOK_GITHUB_API_URL",
    "ROLLHOOK_NOTIFY_CONSOLE",
)


@pytest.fixture(autouse=True)
def _only_the_tests_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notifiers are wired from settings; the machine's own must not leak into a test."""
    for name in NOTIFY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(
        token="xoxb-1234-rollhook-test", channels={"deploys": "C0DEPLOYS"}
    ) as stand_in:
        yield stand_in


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(token="ghp_rollhookTestToken") as stand_in:
        yield stand_in


@pytest.fixture
def target() -> Target:
    return Target(
        name="anythingllm",
        repo="https://github.com/acme/llm-infra.git",
        path="environments/prod/anything-llm",
        project="anythingllm",
        service="anything-llm",
        images=["docker.io/mintplexlabs/anythingllm"],
        tags="glob:1.*",
        notify=Notify(commit_status=True),
    )
