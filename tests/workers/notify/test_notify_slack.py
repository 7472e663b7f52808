"""Slack: one message per deployment, updated in place, steps in its thread; Slack's
answers honoured (ok:false, 429 + Retry-After); nothing delivered is sent twice."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from rollhook.records.schema import notify_state
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackStandIn
from workers.notify import RetryLater


def _flow(records: Engine, slack: SlackStandIn, target: Target, **more: Any) -> Flow:
    settings = {
        "slack_token": slack.token,
        "slack_channel": "deploys",
        "slack_api_url": slack.api_url,
        **more,
    }
    return Flow(records, notifiers_for(**settings), target)


def _while_in_flight(stand_in: SlackStandIn, action: Callable[[], object]) -> None:
    """Run ``action`` once, while the stand-in's next request is in flight."""

    def hook(_path: str) -> None:
        stand_in.on_request = None
        action()

    stand_in.on_request = hook


def _text(blocks: list[dict[str, Any]] | None) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_a_deployment_is_one_message_updated_in_place_with_steps_in_its_thread(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)

    ids = flow.announce(record)
    assert flow.statuses(ids) == ["delivered"]
    [message] = slack.messages
    assert message.channel == "C0DEPLOYS"
    assert "deploying 1.16.2" in message.text

    final = rec.finish(records, record, "succeeded")
    ids = flow.report(final)
    assert flow.statuses(ids) == ["delivered"]

    [top] = slack.top_level()
    assert top is message and len(top.updates) == 1  # updated, not posted again
    assert top.current_text.startswith("anythingllm: 1.16.2 deployed")
    blocks = top.current_blocks or []
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"].endswith("anythingllm: 1.16.2 deployed")
    body = _text(blocks)
    short_sha = final.commit[:7]
    assert f"<https://github.com/acme/llm-infra/commit/{final.commit}|{short_sha}>" in body
    assert "Bump anything-llm to 1.16.2" in body and "Mona Lisa" in body
    old, new = rec.digest("1.16.1")[7:19], rec.digest("1.16.2")[7:19]
    assert f"1.16.1 ({old}) \u2192 1.16.2 ({new})" in body
    assert "postgres" not in body  # unchanged images are not news
    assert "github by octocat" in body
    assert "72d3162e-cc78-11e3-81ab-4c9367dc0958" in body
    assert "2m" in body  # duration

    [reply] = slack.replies(top.ts)
    steps = _text(reply.blocks)
    for name in ("sync", "plan", "preflight", "backup", "apply", "gate"):
        assert f"`{name}` ok" in steps
    assert reply.text

    row = flow.rows(record.id)["slack"]
    assert row["status"] == "delivered"
    assert row["external"]["slack"] == {"channel": "C0DEPLOYS", "ts": top.ts}
    assert [h["outcome"] for h in row["history"]] == ["delivered", "delivered"]


def test_a_rolled_back_deployment_tells_the_failed_step_the_log_and_the_rollback(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    flow.deliver(flow.report(rec.finish(records, record, "rolled_back")))

    [top] = slack.top_level()
    assert top.current_text.startswith("anythingllm: 1.16.2 FAILED, rolled back to 1.16.1")
    body = _text(top.current_blocks)
    assert "*Failed step:* `gate`: health probe" in body
    assert "*Rollback:* Rolled back to 1.16.1: rollback ok, rollback-gate ok." in body
    assert "GET /api/ping -&gt; 502 Bad Gateway" in body  # last log lines, escaped for mrkdwn
    assert "&lt;server&gt; &amp; retrying" in body
    # Secrets in log lines never reach Slack.
    everything = json.dumps([(m.text, m.blocks, m.updates) for m in slack.messages])
    assert "ghs_s3cr3tT0ken" not in everything
    assert "x-access-token" not in everything


def test_ok_false_with_http_200_is_an_error(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target, slack_channel="no-such-channel")
    assert flow.statuses(flow.announce(rec.insert_running(records))) == ["failed"]
    assert slack.messages == []
    [row] = flow.all_rows()
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["history"][-1]["detail"] == "slack chat.postMessage: channel_not_found"


def test_a_wrong_token_fails_without_the_token_in_the_record(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target, slack_token="xoxb-wrong-token-4711")
    assert flow.statuses(flow.announce(rec.insert_running(records))) == ["failed"]
    [row] = flow.all_rows()
    assert "invalid_auth" in row["history"][-1]["detail"]
    assert "xoxb-wrong-token-4711" not in json.dumps(row, default=str)


def test_429_is_retried_after_retry_after_and_every_process_waits(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    slack.rate_limit_next(retry_after=30)
    ids = flow.announce(rec.insert_running(records))
    [retry] = flow.deliver(ids)
    assert isinstance(retry, RetryLater) and retry.seconds >= 30
    with records.connect() as conn:
        slot = conn.execute(select(notify_state.c.value)).scalar_one()
    # The channel's shared slot moved ~30 s ahead: other processes will not post meanwhile.
    assert slot["next_at"] >= slack.requests[-1][0] + 25
    with records.begin() as conn:
        conn.execute(notify_state.delete())  # the test does not wait the 30 s out
    assert flow.statuses(ids) == ["delivered"]
    [row] = flow.all_rows()
    assert [h["outcome"] for h in row["history"]] == ["retry", "delivered"]
    assert len(slack.messages) == 1


def test_slack_trouble_is_retried_and_given_up_after_bounded_attempts(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    slack.error_next("internal_error", times=10)
    ids = flow.announce(rec.insert_running(records))
    results = [flow.deliver(ids)[0] for _ in range(6)]
    retries = [r.seconds for r in results if isinstance(r, RetryLater)]
    assert retries == [10, 30, 90, 270]  # backoff between attempts
    assert [getattr(r, "status", "retry") for r in results[4:]] == ["failed", "failed"]
    [row] = flow.all_rows()
    assert row["attempts"] == 5
    assert [h["outcome"] for h in row["history"]] == ["retry"] * 4 + ["failed"]


def test_a_half_done_delivery_resumes_without_repeating_what_left(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    ids = flow.report(rec.finish(records, record, "succeeded"))
    # The update goes through, the thread reply meets a 429.
    slack.rate_limit_next(retry_after=0, path="chat.postMessage")
    assert isinstance(flow.deliver(ids)[0], RetryLater)
    [top] = slack.top_level()
    assert len(top.updates) == 1 and slack.replies(top.ts) == []
    assert flow.statuses(ids) == ["delivered"]
    assert flow.statuses(ids) == ["delivered"]
    assert len(top.updates) == 1 and len(slack.replies(top.ts)) == 1
    assert len(slack.top_level()) == 1


def test_two_copies_of_the_task_at_once_send_one_message(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    ids = flow.announce(rec.insert_running(records))
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def run() -> None:
        barrier.wait()
        outcomes.extend(flow.statuses(ids))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(slack.messages) == 1
    assert "delivered" in outcomes and set(outcomes) <= {"delivered", "pending"}
    [row] = flow.all_rows()
    assert row["attempts"] == 1 and len(row["history"]) == 1  # the others never tried


def test_the_end_arriving_before_the_start_was_posted_posts_the_final_message_once(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    first = flow.announce(record)  # the broker was slow: not delivered yet
    second = flow.report(rec.finish(records, record, "succeeded"))
    assert first == second
    flow.deliver(first + second)
    [top] = slack.top_level()
    assert top.updates == [] and "1.16.2 deployed" in top.text
    assert len(slack.replies(top.ts)) == 1


def test_a_deleted_message_is_replaced_by_a_new_one(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    slack.messages.clear()  # someone deleted it in Slack
    flow.deliver(flow.report(rec.finish(records, record, "failed")))
    [top] = slack.top_level()
    assert "1.16.2 FAILED at gate, rollback FAILED" in top.text
    assert len(slack.replies(top.ts)) == 1


def test_huge_logs_and_commit_messages_stay_within_slacks_limits(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    rec.set_status(
        records,
        record.id,
        log="".join(f"12:00:00 {'x' * 500} line {i}\n" for i in range(2000)),
        commit_info={**record.commit_info, "message": "m" * 5000},
    )
    final = rec.finish(records, rec.get(records, record.id), "rolled_back")
    assert flow.statuses(flow.report(final)) == ["delivered"]
    [top] = slack.top_level()
    last_line = "can't reach database &lt;server&gt; &amp; retrying"
    assert last_line in _text(top.blocks)  # the end of the log is what is kept
    assert last_line in _text(slack.replies(top.ts)[0].blocks)
    assert "m" * 100 in _text(top.blocks)  # the commit message, cut to fit


def test_webhook_only_sends_one_message_when_the_deployment_ends(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = Flow(records, notifiers_for(slack_webhook_url=slack.webhook_url), target)
    record = rec.insert_running(records)
    assert flow.announce(record) == []
    ids = flow.report(rec.finish(records, record, "rolled_back"))
    slack.rate_limit_next(retry_after=2, path=slack.webhook_path)
    [retry] = flow.deliver(ids)
    assert isinstance(retry, RetryLater) and retry.seconds >= 2
    with records.begin() as conn:
        conn.execute(notify_state.delete())
    assert flow.statuses(ids) == ["delivered"]
    assert flow.statuses(ids) == ["delivered"]
    [message] = slack.messages
    assert message.text.startswith("anythingllm: 1.16.2 FAILED, rolled back to 1.16.1")
    row = flow.rows(record.id)["slack_webhook"]
    assert slack.webhook_path not in json.dumps(row, default=str)


@pytest.mark.parametrize("error", ["invalid_blocks", "no_text"])
def test_a_refused_webhook_message_fails_for_good(
    records: Engine, slack: SlackStandIn, target: Target, error: str
) -> None:
    flow = Flow(records, notifiers_for(slack_webhook_url=slack.webhook_url), target)
    record = rec.insert_running(records)
    ids = flow.report(rec.finish(records, record, "failed"))
    slack.fail_next(400, error.encode(), path=slack.webhook_path)
    assert flow.statuses(ids) == ["failed"]
    assert error in flow.rows(record.id)["slack_webhook"]["history"][-1]["detail"]


def test_the_end_arriving_while_the_start_is_being_posted_is_told_in_the_same_run(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    ids = flow.announce(record)
    final = rec.finish(records, record, "succeeded")
    _while_in_flight(slack, lambda: flow.report(final))
    assert flow.statuses(ids) == ["delivered"]
    [top] = slack.top_level()
    assert "deploying" in top.text and top.current_text.startswith("anythingllm: 1.16.2 deployed")
    assert len(slack.replies(top.ts)) == 1
    history = flow.rows(record.id)["slack"]["history"]
    assert [(h["outcome"], h["phase"]) for h in history] == [
        ("sent", "running"),
        ("delivered", "final"),
    ]


def test_a_start_that_fails_for_good_does_not_take_the_end_down_with_it(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = _flow(records, slack, target)
    record = rec.insert_running(records)
    ids = flow.announce(record)
    final = rec.finish(records, record, "rolled_back")
    slack.error_next("msg_blocks_too_long")
    _while_in_flight(slack, lambda: flow.report(final))
    [retry] = flow.deliver(ids)
    assert isinstance(retry, RetryLater) and retry.seconds <= 5  # the end is tried soon
    assert flow.statuses(ids) == ["delivered"]
    [top] = slack.top_level()
    assert top.text.startswith("anythingllm: 1.16.2 FAILED, rolled back to 1.16.1")


def test_the_webhook_url_never_reaches_the_logs(
    records: Engine, slack: SlackStandIn, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = Flow(records, notifiers_for(slack_webhook_url=slack.webhook_url), target)
    record = rec.insert_running(records)
    ids = flow.report(rec.finish(records, record, "failed"))
    slack.fail_next(500, b"internal_error", path=slack.webhook_path)
    flow.deliver(ids)
    assert flow.statuses(ids) == ["delivered"]
    assert caplog.records and slack.webhook_path not in caplog.text
