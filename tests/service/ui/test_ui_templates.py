"""What the targets page shows of a target's state: the API's fields when it has them,
nothing where it has not (the reconcile loop's ``sync`` object comes with issue 7)."""

from __future__ import annotations

from typing import Any

import pytest

from service.ui import render
from service.ui.calls import Answer
from service.ui.pages import state_of
from service.ui.session import Session
from tests.service.ui.dashboard import inline_code

SESSION = Session("id", "alice", "csrf-token-of-the-session")
IMAGE = "registry.example.com/acme/anythingllm:1.16.1@sha256:" + "9f" * 32


def target(**fields: Any) -> dict[str, Any]:
    """A target as GET /targets answers it (plus the page's newest deployment)."""
    document: dict[str, Any] = {
        "name": "llm",
        "repo": "https://git.example.com/acme/infra.git",
        "branch": "main",
        "path": "prod",
        "project": "llm",
        "service": "anything-llm",
        "images": ["registry.example.com/acme/anythingllm"],
        "tags": "glob:1.*",
        "paused": False,
        "paused_reason": None,
        "paused_at": None,
        "held": False,
        "current_deployment": {
            "id": "d-current",
            "status": "succeeded",
            "commit": "3f2a9c1" + "0" * 33,
            "images": {"anything-llm": {"old": None, "new": IMAGE}},
            "started_at": "2026-12-01T12:00:00Z",
            "finished_at": "2026-12-01T12:01:00Z",
        },
        "last_good_deployment": {"id": "d-current"},
        "pins": {},
        "lease": None,
        "newest": None,
    }
    document |= fields
    return document | {"state": state_of(document)}


def section(t: dict[str, Any], answers: dict[str, Answer] | None = None) -> str:
    html = render.text("_target.html", t=t, ui="/ui", session=SESSION, answers=answers or {})
    assert inline_code(html) == []
    return html


# The reconcile loop's sync object (issue 7's GET /targets), in manual mode with a
# webhook's deployment waiting for approval and a drifted container.
SYNC = {
    "status": "pending",
    "auto": False,
    "desired": {"commit": "4e5f", "images": {}},
    "live": {},
    "behind": ["main is at 4e5f6a7, 3f2a9c1 runs"],
    "drift": [{"service": "anything-llm", "what": "image", "detail": "runs sha256:1234"}],
    "drift_since": "2026-12-01T12:04:00Z",
    "pending": {
        "deployments": [
            {
                "deployment": "d-waiting",
                "kind": "deploy",
                "source": "github",
                "event": "e-1",
                "ref": "4e5f6a7",
                "image": None,
                "queued_at": "2026-12-01T12:03:00Z",
            }
        ],
        "drift": [],
    },
    "degraded": None,
    "last_poll_at": "2026-12-01T12:05:00Z",
    "last_error": None,
}


def test_a_target_without_sync_state_shows_none() -> None:
    html = section(target())
    assert "1.16.1" in html and "sha256:9f9f9f9f9f9f" in html  # the version: tag and digest
    assert "Sync" not in html and "Drift" not in html and "Pending" not in html
    assert "Approve" not in html
    assert 'value="csrf-token-of-the-session"' in html


def test_a_target_with_sync_state_shows_status_drift_and_pending() -> None:
    html = section(target(sync=SYNC))
    assert 'class="badge s-pending">pending<' in html
    assert "manual: changes wait for approval" in html
    assert "main is at 4e5f6a7, 3f2a9c1 runs" in html
    assert "anything-llm: image (runs sha256:1234)" in html
    assert "since 2026-12-01 12:04:00" in html
    assert 'href="/ui/deployments/d-waiting">deploy</a>' in html
    assert "<code>4e5f6a7</code>" in html and "from github" in html
    assert "polled 2026-12-01 12:05:00" in html
    assert "Degraded" not in html
    # Approval is offered for a pending change only, and posts to the sync action.
    assert 'action="/ui/targets/llm/sync"' in html and "Approve" in html
    synced = SYNC | {"status": "synced", "auto": True, "behind": [], "drift": [], "pending": None}
    html = section(target(sync=synced))
    assert 'class="badge s-synced">synced<' in html
    assert "Approve" not in html and "Drift" not in html and "Pending" not in html
    assert "Behind" not in html and "manual" not in html


def test_sync_state_of_another_shape_is_shown_as_text() -> None:
    """A field whose shape the templates do not know is shown as text, not an error."""
    odd = SYNC | {
        "drift": ["web: stopped"],
        "pending": {"commit": "4e5f6a7", "summary": "main@4e5f6a7: 1.16.1 -> 1.16.2"},
        "degraded": {"since": "2026-12-01T12:06:00Z", "reason": "healing gave up after 3"},
    }
    html = section(target(sync=odd))
    assert "<li>web: stopped</li>" in html
    assert "summary: main@4e5f6a7: 1.16.1 -&gt; 1.16.2" in html
    assert "healing gave up after 3" in html and "since 2026-12-01 12:06:00" in html
    html = section(target(sync=SYNC | {"pending": "one change", "degraded": True}))
    assert "one change" in html and "Degraded" in html


def test_an_answer_is_shown_with_the_target_it_changed() -> None:
    queued = Answer(202, {"status": "queued", "id": "e-123"})
    html = section(target(), {"llm": queued})
    assert '<span class="code">202</span> queued' in html
    assert 'href="/ui/events/e-123"' in html
    refused = Answer(404, {"status": "not_found", "reason": "unknown target 'llm'"})
    html = section(target(), {"llm": refused})
    assert "not_found: unknown target &#39;llm&#39;" in html and "/ui/events/" not in html


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, "succeeded"),
        ({"current_deployment": None}, "never deployed"),
        ({"newest": {"status": "running"}}, "deploying"),
        ({"newest": {"status": "queued"}, "current_deployment": None}, "deploying"),
        ({"newest": {"status": "failed"}}, "succeeded"),  # what runs is the current one
        ({"paused": True}, "succeeded"),  # paused is shown beside it
        ({"sync": {"status": "drifted"}}, "drifted"),  # the reconcile loop's word wins
        ({"sync": {"status": "pending"}, "newest": {"status": "running"}}, "pending"),
        ({"sync": None}, "succeeded"),
    ],
)
def test_the_state_in_one_word(fields: dict[str, Any], state: str) -> None:
    assert target(**fields)["state"] == state
