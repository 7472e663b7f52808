"""Approving and rejecting what waits for approval (manual mode), by whoever may.

An approval is a sync (what ``POST /targets/{name}/sync`` queues): the worker applies what
Git and the registry want and records who approved it (``approved_by``); a change held by
a closed deploy window is deployed at once, noted on the record as forced by the approver.
A rejection is a job of its own: the worker ends the automatic deployments that wait,
unrun, recorded as superseded with who rejected them (workers/rejection.py). Both are
stored as an event with its job before anybody is answered, so a press or a command is
never lost and never done twice; who asked is the event's actor.

``POST /targets/{name}/reject`` is the API's (and ``rollhook reject``'s) way; Slack's
buttons come in through service/slack.py.
"""

from __future__ import annotations

import logging
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollhook import events
from rollhook.events import JobFields
from rollhook.jobs import Source
from rollhook.records import deployments
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Target
from service import answers
from service.api import BadRequest, read_json
from service.logs import printable, request_log
from service.recorder import Queued, Recorded, StoreFailed
from service.runtime import Runtime

log = logging.getLogger("rollhook.approvals")

Decision = Literal["approve", "reject"]
ACTIONS: dict[Decision, Literal["sync", "reject"]] = {"approve": "sync", "reject": "reject"}


def waiting(rt: Runtime, name: str) -> list[DeploymentRecord]:
    """The target's automatic deployments that wait for approval, oldest first."""
    with rt.engine.connect() as conn:
        return [r for r in deployments.queued(conn, name) if not r.manual]


async def submit(
    rt: Runtime,
    target: Target,
    decision: Decision,
    *,
    source: Source,
    actor: str,
    body_key: str | None = None,
) -> Recorded:
    """Store the decision as an event with its job (the outbox); raises StoreFailed."""
    action = ACTIONS[decision]
    job: JobFields = {"action": action}
    if decision == "approve":
        # Approving a change the deploy window holds deploys it now: the record says the
        # window was passed on purpose, by whom (``force`` changes nothing else).
        job["force"] = True
    event = events.new_event(
        source,
        action,
        dedup_key=None,
        delivery_id=None,
        actor=actor,
        summary={"targets": [target.name], "action": action, "decision": decision},
        jobs={target.name: job},
        manual=True,
        body_key=body_key,
    )
    outcome = await rt.recorder.record(event)
    if isinstance(outcome, Queued):
        rt.metrics.events_stored.labels(source).inc()
        request_log(log, source, event.id).info(
            "%s of %s by %s queued as event %s", decision, target.name, printable(actor), event.id
        )
    return outcome


async def reject(rt: Runtime, request: Request) -> Response:
    """``POST /targets/{name}/reject`` (body: optional ``actor``): the waiting automatic
    deployments end unrun. 409 when nothing waits."""
    name = request.path_params["name"]
    target = rt.targets.get(name)
    if target is None:
        return answers.not_found(f"unknown target {name!r}")
    document = await read_json(rt, request)
    actor = document.get("actor", "api")
    if not isinstance(actor, str) or not actor.strip():
        raise BadRequest("'actor' must be a non-empty string")
    if not await run_in_threadpool(waiting, rt, name):
        return answers.answer(409, "conflict", f"nothing of {name} waits for approval")
    try:
        outcome = await submit(rt, target, "reject", source="api", actor=actor.strip())
    except StoreFailed as exc:
        log.warning("[api] reject of %s: 503: %s", name, exc)
        return answers.unavailable("the request could not be stored; try again")
    if not isinstance(outcome, Queued):  # a fresh event is neither duplicate nor held
        return answers.ignored("duplicate request")
    return answers.queued(outcome.event_id)
