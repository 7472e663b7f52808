"""The Approve and Reject buttons on a change that waits for approval, as Slack shows them
(workers/notify/blocks.py) and sends them back when pressed (service/slack.py): the action
id is the decision, the value names the target and the waiting deployment."""

from __future__ import annotations

import json
from typing import Any

DECISIONS = ("approve", "reject")


def button_value(target: str, deployment: str) -> str:
    return json.dumps({"target": target, "deployment": deployment}, separators=(",", ":"))


def read_button_value(text: Any) -> tuple[str, str] | None:
    """(target, deployment) from a button's value; None when it names neither."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    target, deployment = value.get("target"), value.get("deployment")
    if not (isinstance(target, str) and target and isinstance(deployment, str) and deployment):
        return None
    return target, deployment
