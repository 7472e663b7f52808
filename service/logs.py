"""Log lines about requests: the delivery id rides along, secrets never do.

Docker Hub cannot sign, so its secret is part of the URL; uvicorn's access log prints
URLs, and this filter rewrites them before any handler sees the record. Request bodies
are never logged (they can hold anything a sender put there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

_TOKEN_IN_PATH = re.compile(r"(/hooks/dockerhub/)[^\s/?\"]+")
REDACTED = r"\1<redacted>"


def redact(text: str) -> str:
    return _TOKEN_IN_PATH.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Removes the Docker Hub URL token from a log record (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
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


def install_redaction() -> None:
    """Idempotent: create_app may run many times in one process (tests)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


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
