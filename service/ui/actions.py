"""The buttons: deploy, rollback, pause, resume and approve, each one API call.

Each is the request a person would send with ``curl`` (``POST /deploy``, ``POST
/rollback``, ``POST /targets/{name}/pause`` ...), made in-process with the session as
the actor (``ui:<who>``), and its answer is shown with the target it changed. A plain
form post (no htmx) that queued something is redirected to what it queued (its event
page, which leads to the deployment), so a reload does not queue it twice.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.logs import printable
from service.ui import render
from service.ui.access import Form, htmx, redirect, signed_in
from service.ui.calls import Answer, call, segment
from service.ui.pages import targets
from service.ui.session import Session

log = logging.getLogger("rollhook.ui")

ACTIONS = ("deploy", "rollback", "pause", "resume", "sync")
MAX_REASON = 200
MAX_ID = 100


def request_for(action: str, target: str, actor: str, form: Form) -> tuple[str, dict[str, Any]]:
    """The API path and JSON body a button press stands for."""
    if action == "deploy":  # no ref: the tracked branch's head
        return "/deploy", {"target": target, "actor": actor}
    if action == "rollback":  # to the deployment named (the API checks it), else the last good
        to = form.get("to", "").strip()
        named = {"to": to[:MAX_ID]} if to else {}
        return "/rollback", {"target": target, "actor": actor} | named
    document: dict[str, Any] = {"actor": actor}
    reason = form.get("reason", "").strip()[:MAX_REASON]
    if action == "pause" and reason:
        document["reason"] = reason
    # resume, pause, and sync (the approval of a pending change in manual mode)
    return f"/targets/{segment(target)}/{action}", document


@signed_in
async def act(request: Request, session: Session, form: Form) -> Response:
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ACTIONS:
        return render.page(request, "error.html", 404, title="Not found", message="No such action.")
    path, document = request_for(action, name, session.actor, form)
    answer = await call(request, "POST", path, document=document)
    log.info(
        "[ui] %s of %s by %s: %d %s",
        action,
        printable(name),
        session.actor,
        answer.code,
        printable(str(answer.document.get("reason") or answer.document.get("status", ""))),
    )
    queued = answer.document.get("id") if answer.code == 202 else None
    if queued and not htmx(request):
        # Post/redirect/get: a reload of the page it leads to cannot queue it again.
        return redirect(request, f"/events/{segment(str(queued))}")
    answers: dict[str, Answer] = {name: answer}
    if htmx(request):  # the target's section, in place
        shown = await targets(request, only=name)
        if shown:
            return render.page(
                request, "_target.html", answer.code, session=session, t=shown[0], answers=answers
            )
    every = await targets(request)
    return render.page(
        request, "targets.html", answer.code, session=session, targets=every, answers=answers
    )
