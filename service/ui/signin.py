"""Signing in with the API token, and out again.

``POST /ui/login`` takes the field ``token`` (compared in constant time) and the form's
CSRF token; a wrong token counts against the client in the same auth-failure limit as
the API (401, then 429 with Retry-After). The right one starts a session (``session.py``).
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import answers, signatures
from service.logs import printable
from service.runtime import runtime
from service.ui import csrf, keys, render
from service.ui.access import Form, api_token, key_of, problem, read_form, signed_in
from service.ui.session import COOKIE, LIFETIME, Session, is_tls, sign_in, sign_out, valid_name

log = logging.getLogger("rollhook.ui")


def _over_tls(request: Request) -> bool:
    peer = request.client.host if request.client else ""
    trusted = runtime(request).addresses.trusts(peer)
    return is_tls(request.url.scheme, trusted, request.headers.get("x-forwarded-proto"))


def _form(
    request: Request, key: bytes, status: int = 200, message: str | None = None, **headers: str
) -> Response:
    """The sign-in form with a fresh CSRF pair (its nonce in a cookie of its own)."""
    nonce, token = csrf.login_pair(key)
    response = render.page(
        request, "login.html", status, headers=headers, login_csrf=token, message=message
    )
    response.set_cookie(
        csrf.LOGIN_COOKIE,
        nonce,
        max_age=csrf.LOGIN_SECONDS,
        path=render.prefix(request) + "/login",
        secure=_over_tls(request),
        httponly=True,
        samesite="strict",
    )
    return response


async def login_form(request: Request) -> Response:
    key = key_of(request)
    if key is None:
        return answers.not_found()
    return _form(request, key)


def _refusal(request: Request, key: bytes, token: str, form: Form) -> Response | None:
    """Why this sign-in is refused (the sign-in form again, saying why), or None."""
    if not csrf.login_token_valid(
        key, request.cookies.get(csrf.LOGIN_COOKIE), form.get(csrf.FIELD)
    ):
        return _form(request, key, 403, "The form had expired; please sign in again.")
    name = form.get("name", "").strip()
    if name and not valid_name(name):
        return _form(request, key, 400, "A name is up to 40 letters, digits, '.', '_', '@', '-'.")
    if signatures.verify_token(form.get("token"), token):
        return None
    rt = runtime(request)
    client = rt.client(request)
    log.warning("[ui] sign-in refused from %s: wrong token", printable(client))
    answer = rt.auth_failed(client)
    retry = answer.headers.get("retry-after")
    if retry is not None:
        message = f"Too many failed sign-ins; try again in {retry} s."
        return _form(request, key, answer.status_code, message, **{"Retry-After": retry})
    return _form(request, key, answer.status_code, "That is not the API token.")


async def login(request: Request) -> Response:
    token = api_token(request)
    if token is None:
        return answers.not_found()
    key = keys.derive(token)
    form = await read_form(request)
    if form is None:
        return problem(request, "That form is too large.", 413)
    refusal = _refusal(request, key, token, form)
    if refusal is not None:
        return refusal
    rt = runtime(request)
    client = rt.client(request)
    name = form.get("name", "").strip()
    cookie, session = await run_in_threadpool(sign_in, rt.engine, key, name or None, client)
    log.info("[ui] %s signed in from %s", session.actor, printable(client))
    response = RedirectResponse(render.prefix(request), 303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(LIFETIME.total_seconds()),
        path=render.prefix(request),
        secure=_over_tls(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(
        csrf.LOGIN_COOKIE, path=render.prefix(request) + "/login", httponly=True, samesite="strict"
    )
    return render.with_headers(response)


@signed_in
async def logout(request: Request, session: Session, form: Form) -> Response:
    await run_in_threadpool(sign_out, runtime(request).engine, session.id)
    log.info("[ui] %s signed out", session.actor)
    response = RedirectResponse(render.prefix(request) + "/login", 303)
    response.delete_cookie(COOKIE, path=render.prefix(request), httponly=True, samesite="strict")
    return response
