"""Log lines about requests: the delivery id rides along, secrets never do.

Docker Hub cannot sign, so its secret is part of the URL; uvicorn's access log prints
URLs, and a filter rewrites them before any handler sees the record. Request bodies
are never logged (they can hold anything a sender put there).

A webhook gets one line, written by ``service.hooks``: source, delivery id, client,
answer and outcome. uvicorn's access line for it would repeat the least of that, at
half the web process's logging cost per webhook, so it is left out; every other
request (the API, probes, unknown paths, errors) keeps its access line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

_PREFIX = "/hooks/dockerhub/"
_TOKEN_IN_PATH = re.compile(r"(/hooks/dockerhub/)[^\s/?\"]+")
REDACTED = r"\1<redacted>"


def redact(text: str) -> str:
    # The substring test first: every access log line passes here, few are Docker Hub's.
    return _TOKEN_IN_PATH.sub(REDACTED, text) if _PREFIX in text else text


def _carries_token(record: logging.LogRecord) -> bool:
    if isinstance(record.msg, str) and _PREFIX in record.msg:
        return True
    args = record.args.values() if isinstance(record.args, dict) else record.args or ()
    return any(isinstance(a, str) and _PREFIX in a for a in args)


class RedactTokens(logging.Filter):
    """Removes the Docker Hub URL token from a log record (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _carries_token(record):
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
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


def install_redaction() -> None:
    """The access log's filters; idempotent: create_app may run many times in one process."""
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
        return f"[{extra.get('source')} delivery={extra.get('delivery_id') or '-'}] {msg}", kwargs


def request_log(logger: logging.Logger, source: str, delivery_id: str | None) -> RequestLog:
    return RequestLog(logger, {"source": source, "delivery_id": delivery_id})
