"""What the waiting message says and carries: the change's lines (commit range, image old ->
new, who pushed), table-style, and Approve/Reject buttons whose press service/slack.py
reads back as the same target and deployment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from rollhook.buttons import button_value
from rollhook.records.deployments import DeploymentRecord
from service.slack import parse_press
from tests.workers.notify.blockkit import check_message
from workers.notify.blocks import target_message
from workers.notify.notices import TargetNotice, _target_notice
from workers.pending_change import change_lines

NOW = datetime(2026, 12, 2, tzinfo=UTC)
REPO = "127.0.0.1:5000/acme/anythingllm"


def record(**values: Any) -> DeploymentRecord:
    base: dict[str, Any] = {
        "id": "d1", "target": "llm", "kind": "deploy", "status": "queued", "reason": None,
        "trigger": {"source": "poll"}, "requested": {}, "commit": None, "commit_info": None,
        "images": {}, "config_hash": None, "fingerprint": None, "previous_deployment_id": None,
        "backup_id": None, "superseded_by": None, "steps": [], "log": "", "lease_token": None,
        "attempt": 0, "children": [], "created_at": NOW, "started_at": None, "finished_at": None,
    }  # fmt: skip
    return DeploymentRecord(**(base | values))


CURRENT = record(
    status="succeeded",
    commit="1111111aaaa",
    images={"anything-llm": {"old": None, "new": f"{REPO}:1.0.0@sha256:{'a' * 64}"}},
)


@pytest.mark.parametrize(
    ("current", "waiting", "lines"),
    [
        (
            CURRENT,
            record(
                requested={"ref": "2222222bbbb"}, trigger={"source": "github", "actor": "alice"}
            ),
            ["commits: 1111111..2222222 on main", "pushed by alice (github)"],
        ),
        (
            None,
            record(requested={"ref": "2222222bbbb"}),
            ["commits: nothing deployed..2222222 on main"],
        ),
        (
            CURRENT,
            record(requested={"image": {"repository": REPO, "tag": "2.0.0"}}),
            [f"image {REPO}: 1.0.0 -> 2.0.0"],
        ),
        (
            None,
            record(requested={"image": {"repository": REPO, "digest": "sha256:" + "b" * 64}}),
            [f"image {REPO}: ? -> sha256:bbbbbbbbbbbb"],
        ),
        (CURRENT, record(), []),  # a poll of the branch head: the headline says it
    ],
)
def test_change_lines(
    current: DeploymentRecord | None, waiting: DeploymentRecord, lines: list[str]
) -> None:
    assert change_lines("main", current, waiting) == lines


def _press(block: dict[str, Any], index: int) -> bytes:
    button = block["elements"][index]
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH"},
        "actions": [{"action_id": button["action_id"], "value": button["value"]}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_the_waiting_message_carries_buttons_that_name_the_waiting_deployment() -> None:
    spec = {
        "target": "llm",
        "event": "pending",
        "headline": "llm: main@2222222 waiting for approval",
        "details": ["commits: 1111111..2222222 on main"],
        "approval": button_value("llm", "d_waiting"),
    }
    text, body = target_message(_target_notice("llm:pending:d_waiting", spec))  # type: ignore[arg-type]
    assert check_message(text, body) is None  # Block Kit's rules, as Slack applies them
    actions = body[-1]
    assert actions["type"] == "actions"
    assert [e["action_id"] for e in actions["elements"]] == ["approve", "reject"]
    approve, reject = parse_press(_press(actions, 0)), parse_press(_press(actions, 1))
    assert (approve.decision, approve.target, approve.deployment) == ("approve", "llm", "d_waiting")
    assert reject.decision == "reject"

    plain = TargetNotice(target="llm", event="pending", headline="h", details=())
    assert all(block["type"] != "actions" for block in target_message(plain)[1])
