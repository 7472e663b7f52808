"""The report value and its words: pure functions over deployment records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollhook.records.deployments import DeploymentRecord
from tests.workers.notify import records as rec
from tests.workers.notify.blockkit import check_message
from workers.notify import blocks, letter, wording
from workers.notify.report import View, build_report, scrub


def _record(status: str, **changes: Any) -> DeploymentRecord:
    start = datetime(2026, 8, 21, 12, 0, tzinfo=UTC)
    steps = [
        {
            "name": "sync",
            "outcome": "ok",
            "started_at": "2026-08-21T12:00:00.000+00:00",
            "finished_at": "2026-08-21T12:00:02.500+00:00",
            "detail": None,
        },
        {
            "name": "gate",
            "outcome": "failed" if status in ("failed", "rolled_back") else "ok",
            "started_at": "2026-08-21T12:00:03.000+00:00",
            "finished_at": "2026-08-21T12:03:03.000+00:00",
            "detail": "probe answered 502",
        },
    ]
    if status == "rolled_back":
        steps.append(
            {
                "name": "rollback",
                "outcome": "ok",
                "started_at": None,
                "finished_at": None,
                "detail": "back on the previous release",
            }
        )
    record = {
        "id": "d01",
        "target": "anythingllm",
        "kind": "deploy",
        "status": status,
        "reason": None,
        "commit": "9f2c1e7aa0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        "trigger": {"source": "registry", "event_id": "e01", "delivery_id": "abc", "actor": None},
        "commit_info": {"message": "Bump\n\nbody", "author": {"name": "Mona"}},
        "images": {"anything-llm": {"old": rec.image("1.16.1"), "new": rec.image("1.16.2")}},
        "steps": steps,
        "log": "a\nb\nc\n",
        "started_at": start,
        "finished_at": start + timedelta(minutes=3, seconds=14),
    }
    return rec.record(**(record | changes))


@pytest.mark.parametrize(
    ("status", "kind", "view", "headline"),
    [
        ("running", "deploy", View(phase="running"), "anythingllm: deploying 1.16.2"),
        ("succeeded", "deploy", View(), "anythingllm: 1.16.2 deployed"),
        (
            "succeeded",
            "deploy",
            View(mode="recovery", count=1),
            "anythingllm: 1.16.2 deployed, recovered after 1 failure",
        ),
        ("rolled_back", "deploy", View(), "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"),
        ("failed", "deploy", View(), "anythingllm: 1.16.2 FAILED at gate"),
        (
            "failed",
            "deploy",
            View(mode="repeat", count=4),
            "anythingllm: 1.16.2 still failing (4 times)",
        ),
        ("no_op", "deploy", View(), "anythingllm: 1.16.2 unchanged"),
        ("succeeded", "rollback", View(), "anythingllm: rolled back to 1.16.2"),
        ("failed", "rollback", View(), "anythingllm: rollback to 1.16.2 FAILED"),
        ("running", "rollback", View(phase="running"), "anythingllm: rolling back to 1.16.2"),
    ],
)
def test_headlines_say_target_version_and_result(
    status: str, kind: str, view: View, headline: str
) -> None:
    report = build_report(_record(status, kind=kind), "anything-llm")
    assert wording.headline(report, view) == headline


def test_the_version_falls_back_to_the_short_commit() -> None:
    report = build_report(_record("succeeded", images={}), "anything-llm")
    assert report.version == "9f2c1e7"
    assert wording.headline(report, View()) == "anythingllm: 9f2c1e7 deployed"
    untagged = {"anything-llm": {"old": None, "new": "ghcr.io/acme/app@" + rec.digest("x")}}
    assert (
        build_report(_record("succeeded", images=untagged), "anything-llm").version
        == (rec.digest("x")[7:19])
    )


def test_facts() -> None:
    report = build_report(_record("rolled_back"), "anything-llm")
    facts = dict(wording.facts(report, View()))
    assert facts["Commit"] == "9f2c1e7 Bump (Mona)"  # first line of the message only
    assert facts["Trigger"] == "registry"
    assert facts["Duration"] == "3m 14s"
    assert report.failed_step is not None and report.failed_step.seconds == 180
    assert wording.rollback_summary(report) == "Rolled back to 1.16.1: rollback ok."


@pytest.mark.parametrize(
    "secret",
    [
        "https://x-access-token:ghs_abcdef123@github.com/acme/repo.git",
        "token xoxb-123-456-abcdef",
        "ghp_0123456789abcdefABCDEF",
        "github_pat_11ABCDEF_xyz",
        "smtp://mailer:hunter2@mail.example.test",
    ],
)
def test_scrub_removes_credentials(secret: str) -> None:
    cleaned = scrub(f"before {secret} after")
    assert "***" in cleaned
    for needle in ("ghs_abcdef123", "xoxb-123", "ghp_0123", "github_pat_11", "hunter2"):
        assert needle not in cleaned


def test_slack_blocks_pass_slacks_checks_for_every_result() -> None:
    for status in ("succeeded", "failed", "rolled_back", "no_op"):
        report = build_report(_record(status), "anything-llm")
        for view in (View(phase="running"), View(), View(mode="repeat", count=2)):
            text, body = blocks.message(report, view)
            assert check_message(text, body) is None
        assert check_message(*blocks.thread_reply(report)) is None


def test_the_stand_in_rejects_what_slack_rejects() -> None:
    """The checks the stand-in applies are real: each of these is refused."""
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
    assert check_message(None, None) == "no_text"
    assert check_message("t", [section] * 51) == "invalid_blocks"
    assert check_message("t", [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])
    assert check_message("t", [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])
    assert check_message("t", [{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}])
    assert check_message("t", [{"type": "section"}])
    assert check_message("t", [{"type": "section", "fields": [section["text"]] * 11}])
    assert check_message("x" * 40_001, None) == "msg_too_long"


def test_the_email_has_text_and_html_with_the_same_story() -> None:
    composed = letter.compose(build_report(_record("rolled_back"), "anything-llm"), View())
    assert composed.subject == "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"
    for part in (composed.text, composed.html):
        assert "probe answered 502" in part
        assert "Rolled back to 1.16.1" in part
    assert composed.html.startswith("<!DOCTYPE html>")


def test_a_stop_that_waited_out_its_grace_period_is_told_in_every_channel() -> None:
    note = (
        "stop took 10.0 s: the container ignored SIGTERM; "
        "`init: true` in the compose file would save it"
    )
    stop = {
        "name": "stop",
        "outcome": "ok",
        "started_at": "2026-08-21T12:00:02.500+00:00",
        "finished_at": "2026-08-21T12:00:12.500+00:00",
        "detail": f"anything-llm stopped in 10.0 s; {note}",
        "note": note,
    }
    plain = build_report(_record("succeeded"), "anything-llm")
    assert plain.notes == ()
    report = build_report(_record("succeeded", steps=[stop]), "anything-llm")
    assert report.notes == (note,)
    final = View()
    assert ("Note", note) in wording.facts(report, final)
    mail = letter.compose(report, final)
    assert note in mail.text and "init: true" in mail.html
    text, message = blocks.message(report, final)
    assert note in text
    assert any(note in str(block) for block in message)
    assert check_message(text, message) is None
    # Not while it runs: the note belongs to the result.
    _, running = blocks.message(report, View(phase="running"))
    assert not any(note in str(block) for block in running)
