"""The dashboard's one key, derived from ROLLHOOK_API_TOKEN, and what it signs.

Deriving it from the token (rather than storing a key of its own) means that changing the
token ends every session and voids every form at once, on every web process.
"""

from __future__ import annotations

import hashlib
import hmac

_CONTEXT = b"rollhook dashboard v1"


def derive(api_token: str) -> bytes:
    return hmac.new(api_token.encode(), _CONTEXT, hashlib.sha256).digest()


def sign(key: bytes, purpose: str, value: str) -> str:
    """An HMAC of ``value`` for one purpose (a cookie's MAC never passes as a form token)."""
    message = purpose.encode() + b"\0" + value.encode("utf-8", "replace")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, purpose: str, value: str, given: str | None) -> bool:
    """Whether ``given`` is ``sign(key, purpose, value)``, compared in constant time."""
    if given is None:
        return False
    expected = sign(key, purpose, value).encode()
    return hmac.compare_digest(expected, given.encode("utf-8", "replace"))
