"""Telling the person who pressed a button why nothing happened: Slack's ``response_url``.

A refused press (not an approver, nothing waits any more, already decided) is answered
over HTTP as before, and also told to the presser alone: an ephemeral message POSTed to the
``response_url`` Slack put in the payload, after the answer has left (Slack wants that
answer within 3 seconds). The URL comes from a request Slack signed, and is still only
followed when it is Slack's own (``https://hooks.slack.com/actions/...``): rollhook never
sends a request to an address a body names (SSRF). The one other base is a loopback Slack
stand-in, and only when ``ROLLHOOK_SLACK_API_URL`` points slack-sdk at one (the tests).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("rollhook.slack")

SLACK_HOOKS = "https://hooks.slack.com/"
SLACK_API = "https://slack.com/api/"
_PATH = "/actions/"


def allowed_base(api_url: str) -> str:
    """Where response URLs may point: Slack's hooks host; the origin of a loopback
    stand-in when the Web API is pointed at one (tests only)."""
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or parts.scheme not in ("http", "https"):
        return SLACK_HOOKS
    return f"{parts.scheme}://{parts.netloc}/"


def may_follow(url: object, base: str) -> bool:
    """``url`` is a response URL under ``base``: same scheme and host (and port), no user
    part, a ``/actions/`` path, nothing hidden in it."""
    if not isinstance(url, str) or len(url) > 2048 or not url.isascii():
        return False
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        return False
    try:
        parts, allowed = urlsplit(url), urlsplit(base)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return False
    return (
        parts.scheme == allowed.scheme
        and parts.netloc.lower() == allowed.netloc.lower()
        and parts.username is None
        and parts.path.startswith(_PATH)
        and not parts.fragment
    )


class SlackReplies:
    """Ephemeral replies through response URLs; one HTTP client for the process."""

    def __init__(self, base: str, timeout: float = 5.0) -> None:
        self.base = base
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def tell(self, response_url: str, text: str) -> None:
        """Best effort: a reply that cannot be sent is logged, never raised."""
        if not may_follow(response_url, self.base):
            log.warning("[slack] a response_url outside %s was not followed", self.base)
            return
        body = {"response_type": "ephemeral", "replace_original": False, "text": text[:3000]}
        try:
            answer = await self._client.post(response_url, json=body)
        except httpx.HTTPError as exc:
            log.warning("[slack] ephemeral reply failed: %s", type(exc).__name__)
            return
        if answer.status_code != 200:
            log.warning("[slack] ephemeral reply answered HTTP %d", answer.status_code)

    async def close(self) -> None:
        await self._client.aclose()
