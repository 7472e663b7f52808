"""Who may see a dashboard page: the guard every page and form goes through.

No API token configured: 404, as the API answers. No valid session: to the sign-in page.
A form post without the session's CSRF token: 403. Every answer carries the security
headers (``render.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import answers
from service.hooks import read_capped
from service.logs import printable
from service.runtime import runtime
from service.ui import csrf, keys, render
from service.ui.session import COOKIE, Session, current

log = logging.getLogger("rollhook.ui")

Form = dict[str, str]
Handler = Callable[[Request, Session, Form], Awaitable[Response]]
MAX_FORM_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


def api_token(request: Request) -> str | None:
    token = runtime(request).settings.api_token
    return None if token is None else token.get_secret_value()


def key_of(request: Request) -> bytes | None:
    """The dashboard's key, or None when no API token is configured (no dashboard)."""
    token = api_token(request)
    return None if token is None else keys.derive(token)


def htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, path: str, htmx_status: int = 200) -> Response:
    """See ``path``: a plain redirect, or htmx's own header for a request htmx made (it
    would otherwise put the whole target page where a fragment belongs)."""
    location = render.prefix(request) + path
    if htmx(request):
        redirected = Response(status_code=htmx_status, headers={"HX-Redirect": location})
        return render.with_headers(redirected)
    return render.with_headers(RedirectResponse(location, 303))


async def read_form(request: Request) -> Form | None:
    """A urlencoded form's fields (the first of repeated ones); no fields for any other
    body (so it lacks the CSRF token: 403), None for one over the size cap."""
    body = await read_capped(request, MAX_FORM_BYTES)
    if body is None:
        return None
    if answers.media_type(request.headers.get("content-type", "")) != FORM_TYPE:
        return {}
    fields: Form = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def problem(request: Request, message: str, status: int = 403, title: str = "Refused") -> Response:
    """An error page; for htmx, a notice at the top of the page it came from."""
    if htmx(request):
        headers = {"HX-Retarget": "#notice", "HX-Reswap": "innerHTML"}
        return render.page(request, "_notice.html", status, headers=headers, message=message)
    return render.page(request, "error.html", status, title=title, message=message)


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        key = key_of(request)
        if key is None:
            return answers.not_found()
        rt = runtime(request)
        cookie = request.cookies.get(COOKIE)
        session = await run_in_threadpool(current, rt.engine, key, cookie)
        if session is None:
            return redirect(request, "/login", htmx_status=401)
        form: Form = {}
        if request.method == "POST":
            posted = await read_form(request)
            if posted is None:
                return problem(request, "That form is too large.", 413)
            if not csrf.session_token_valid(key, session.id, posted.get(csrf.FIELD)):
                log.warning(
                    "[ui] %s %s refused: missing or wrong CSRF token (%s)",
                    request.method,
                    printable(request.url.path),
                    session.actor,
                )
                return problem(request, "This form is not from this session; reload the page.")
            form = posted
        return render.with_headers(await handler(request, session, form))

    return endpoint
