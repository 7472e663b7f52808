"""Block Kit checks as Slack applies them to chat.postMessage, chat.update and webhooks.

Slack's documented limits: at most 50 blocks; a header's plain_text at most 150
characters; a section's text at most 3000, its fields at most 10 of at most 2000 each,
and a section needs text or fields; a context holds 1 to 10 elements; text objects are
``plain_text`` or ``mrkdwn`` with non-empty text; block ids are unique, at most 255.
A message without blocks needs ``text`` (``no_text``); top-level text over 40,000
characters is ``msg_too_long``. A violation answers ``invalid_blocks``.
"""

from __future__ import annotations

from typing import Any

KNOWN = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
}


def _text_object(value: Any, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") in kinds
        and isinstance(value.get("text"), str)
        and 0 < len(value["text"]) <= limit
    )


def _header_ok(block: dict[str, Any]) -> bool:
    return _text_object(block.get("text"), 150, ("plain_text",))


def _section_ok(block: dict[str, Any]) -> bool:
    text, fields = block.get("text"), block.get("fields")
    text_ok = text is None or _text_object(text, 3000)
    fields_ok = fields is None or (
        isinstance(fields, list)
        and 0 < len(fields) <= 10
        and all(_text_object(f, 2000) for f in fields)
    )
    return (text is not None or fields is not None) and text_ok and fields_ok


def _context_ok(block: dict[str, Any]) -> bool:
    elements = block.get("elements")
    return (
        isinstance(elements, list)
        and 0 < len(elements) <= 10
        and all(
            _text_object(e, 3000) or (isinstance(e, dict) and e.get("type") == "image")
            for e in elements
        )
    )


_CHECKS = {"header": _header_ok, "section": _section_ok, "context": _context_ok}


def _block_ok(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") not in KNOWN:
        return False
    check = _CHECKS.get(block["type"])
    return check is None or check(block)


def check_message(text: Any, blocks: Any) -> str | None:
    """The error Slack would answer with, or None for a message it accepts."""
    if text is not None and (not isinstance(text, str) or len(text) > 40_000):
        return "msg_too_long" if isinstance(text, str) else "invalid_arguments"
    if blocks is None or blocks == []:
        return None if text else "no_text"
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and "block_id" in b]
    if len(ids) != len(set(ids)) or any(not isinstance(i, str) or len(i) > 255 for i in ids):
        return "invalid_blocks"
    return None if all(_block_ok(b) for b in blocks) else "invalid_blocks"
