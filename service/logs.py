"""Log lines about requests: the delivery id rides along, secrets never do.

Docker Hub cannot sign, so its secret is part of the URL; uvicorn's access log prints
URLs, and a filter rewrites them before any handler sees the record: whatever follows
``dockerhub/`` in a path (in any case, after any number of slashes) and every query
string is replaced, and the configured secrets themselves, in any spelling a URL gives
them, are replaced wherever they appear. Request bodies are never logged (they can hold
anything a sender put there).

Values a client chose (delivery ids, content types, addresses) pass through
:func:`printable` before they reach a line: a control character (CR, LF, ESC, U+0085,
U+2028...) could otherwise start a forged line or rewrite the terminal.

A webhook gets one line, written by ``service.hooks``: source, delivery id, client,
answer and outcome. uvicorn's access line for it would repeat the least of that, at
half the web process's logging cost per webhook, so it is left out; every other
request (the API, probes, unknown paths, errors) keeps its access line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote

# "dockerhub" then a slash (or an encoded one), then the rest of the path: the token, or
# where a mistyped URL (/hooks//dockerhub/, /HOOKS/DOCKERHUB/, ...) put it.
_DOCKERHUB_TAIL = re.compile(r"(dockerhub)(?:/|%2f)[^\s\"?]*", re.IGNORECASE)
_QUERY = re.compile(r"\?[^\s\"]*")
_SECRETS: set[str] = set()  # every configured secret, in every spelling a URL gives it


def printable(text: str) -> str:
    """``text`` with every character that is not printable (and the backslash) escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        "\\\\" if ch == "\\" else ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text
    )


def redact(text: str) -> str:
    """A log text without a Docker Hub URL token or a configured secret."""
    text = _DOCKERHUB_TAIL.sub(r"\1/<redacted>", text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


def redact_path(path: str) -> str:
    """A request path for the access log: redacted, and its query string left out."""
    return redact(_QUERY.sub("?<redacted>", path))


class RedactTokens(logging.Filter):
    """Removes secrets from a log record (message and arguments); for an access line
    (client, method, path, version, status) also the query, and escapes the client."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and record.name == "uvicorn.access":
            client, method, path, version, status = args
            record.args = (
                printable(client) if isinstance(client, str) else client,
                method,
                redact_path(path) if isinstance(path, str) else path,
                version,
                status,
            )
        elif isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def configure() -> None:
    """Give rollhook's own loggers a handler when nobody configured logging.

    uvicorn configures only its own loggers; without this, rollhook's INFO lines (each
    webhook's answer and delivery id) would be dropped.
    """
    ours = logging.getLogger("rollhook")
    if ours.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


# The webhook endpoints of service.hooks (path without a query string).
_HOOK_PATH = re.compile(r"/hooks/(?:github|gitlab|registry|harbor|dockerhub/[^/?]+)")


class SkipHookAccess(logging.Filter):
    """Leaves out uvicorn's access line for a webhook that service.hooks logged itself.

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path, version,
    status). A POST to a webhook endpoint always reaches the hook pipeline, which logs
    it; a 5xx may come from elsewhere (an unexpected error) and keeps its access line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _, method, path, _, status = args
        return not (
            method == "POST"
            and isinstance(status, int)
            and status < 500
            and isinstance(path, str)
            and _HOOK_PATH.fullmatch(path) is not None
        )


def install_redaction(secrets: Iterable[str] = ()) -> None:
    """The access log's filters; idempotent: create_app may run many times in one process.

    ``secrets``: the configured ones, replaced wherever they appear (as sent, and as a
    URL quotes them) from now on.
    """
    for secret in secrets:
        if secret:
            once = quote(secret, safe="")
            _SECRETS.update({secret, quote(secret), once, quote(once, safe="")})
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, SkipHookAccess) for f in access.filters):
        # First, so that a skipped line costs no redaction.
        access.filters.insert(0, SkipHookAccess())


class RequestLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the source and delivery id it is about."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        delivery = printable(str(extra.get("delivery_id") or "-"))
        return f"[{extra.get('source')} delivery={delivery}] {msg}", kwargs


def request_log(logger: logging.Logger, source: str, delivery_id: str | None) -> RequestLog:
    return RequestLog(logger, {"source": source, "delivery_id": delivery_id})
