"""The dashboard's pages: targets, the history, one deployment, one event.

Each reads what the HTTP API answers (``calls.py``), so a field the API comes to hold
(a target's ``sync`` state, say) is shown once a template names it, and nothing breaks
while the API does not hold it yet.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api import ROLLBACK_TO
from service.ui import render
from service.ui.access import Form, htmx, problem, redirect, signed_in
from service.ui.calls import Answer, call, segment
from service.ui.session import Session

HISTORY_LIMIT = 50


def missing(request: Request, message: str) -> Response:
    return problem(request, message, 404, "Not found")


BUSY = ("queued", "running")


def state_of(target: dict[str, Any]) -> str:
    """One word for a target's state: its sync status when the API tells one, else what
    its deployments say (paused and held are shown beside it)."""
    sync = target.get("sync")
    if isinstance(sync, dict) and sync.get("status"):
        return str(sync["status"])
    newest = target.get("newest") or {}
    if newest.get("status") in BUSY:
        return "deploying"
    current = target.get("current_deployment") or {}
    if not current:
        return "never deployed"
    return str(current.get("status") or "unknown")


async def targets(request: Request, only: str | None = None) -> list[dict[str, Any]]:
    """Each target as ``GET /targets`` answers it, with what ``GET /targets/{name}`` adds
    (its ``sync`` state, where that endpoint exists) and its newest deployment."""
    listed = await call(request, "GET", "/targets")
    shown = []
    for listed_target in listed.document.get("targets", []):
        name = listed_target["name"]
        if only is not None and name != only:
            continue
        target = dict(listed_target)
        if "sync" not in target:
            detail = await call(request, "GET", f"/targets/{segment(name)}")
            if detail.ok:
                target |= detail.document
        newest = await call(request, "GET", "/deployments", params={"target": name, "limit": "1"})
        target["newest"] = (newest.document.get("deployments") or [None])[0]
        target["state"] = state_of(target)
        shown.append(target)
    return shown


@signed_in
async def targets_page(request: Request, session: Session, form: Form) -> Response:
    return render.page(
        request, "targets.html", session=session, targets=await targets(request), answers={}
    )


@signed_in
async def target_status(request: Request, session: Session, form: Form) -> Response:
    """One target's state, for the targets page to refresh it in place."""
    found = await targets(request, only=request.path_params["name"])
    if not found:
        return missing(request, "No such target.")
    return render.page(request, "_status.html", session=session, t=found[0])


@signed_in
async def history(request: Request, session: Session, form: Form) -> Response:
    target = request.query_params.get("target") or None
    params = {"limit": str(HISTORY_LIMIT)} | ({"target": target} if target else {})
    answer = await call(request, "GET", "/deployments", params=params)
    listed = await call(request, "GET", "/targets")
    names = [t["name"] for t in listed.document.get("targets", [])]
    return render.page(
        request,
        "deployments.html",
        200 if answer.ok else answer.code,
        session=session,
        deployments=answer.document.get("deployments", []),
        names=names,
        selected=target,
        problem=None if answer.ok else answer.document.get("reason", "not found"),
    )


async def deployment_record(request: Request, deployment_id: str) -> Answer:
    return await call(request, "GET", f"/deployments/{segment(deployment_id)}")


async def can_roll_back_to(request: Request, record: dict[str, Any]) -> bool:
    """Whether the deployment page offers a rollback to this deployment: it served (the
    states the API takes), its target is configured, and it is not what runs now."""
    if record.get("status") not in ROLLBACK_TO:
        return False
    listed = await call(request, "GET", "/targets")
    for target in listed.document.get("targets", []):
        if target.get("name") == record.get("target"):
            current = target.get("current_deployment") or {}
            return bool(current.get("id") != record.get("id"))
    return False


@signed_in
async def deployment(request: Request, session: Session, form: Form) -> Response:
    deployment_id = request.path_params["deployment_id"]
    answer = await deployment_record(request, deployment_id)
    if not answer.ok:
        return missing(request, f"No deployment {deployment_id}.")
    return render.page(
        request,
        "deployment.html",
        session=session,
        d=answer.document,
        roll_back_here=await can_roll_back_to(request, answer.document),
    )


@signed_in
async def event(request: Request, session: Session, form: Form) -> Response:
    """An event and the deployments it led to; straight to the deployment when it is one
    (the way from a button press to its live log)."""
    event_id = request.path_params["event_id"]
    answer = await call(request, "GET", f"/events/{segment(event_id)}")
    if not answer.ok:
        return missing(request, f"No event {event_id}.")
    led_to = answer.document.get("deployments") or []
    if len(led_to) == 1:
        return redirect(request, f"/deployments/{segment(led_to[0]['id'])}")
    template = "_event_deployments.html" if htmx(request) else "event.html"
    return render.page(request, template, session=session, e=answer.document)
