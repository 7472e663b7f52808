"""CSRF tokens: every form carries one, and a post without the right one is refused (403).

Signed in, the token is the session's (an HMAC of its id): the same on every form of the
session, unknown to another site, checked in constant time. The sign-in form has no
session yet; it pairs a random nonce, kept in a short-lived cookie, with its HMAC in the
form (a double submit that a planted cookie cannot satisfy without the key).
"""

from __future__ import annotations

import secrets

from service.ui import keys

FIELD = "csrf"
LOGIN_COOKIE = "rollhook_login"
LOGIN_SECONDS = 3600


def session_token(key: bytes, session_id: str) -> str:
    return keys.sign(key, "csrf", session_id)


def session_token_valid(key: bytes, session_id: str, given: str | None) -> bool:
    return keys.verify(key, "csrf", session_id, given)


def login_pair(key: bytes) -> tuple[str, str]:
    """A nonce for the sign-in cookie and the token for the sign-in form."""
    nonce = secrets.token_urlsafe(24)
    return nonce, keys.sign(key, "login", nonce)


def login_token_valid(key: bytes, nonce: str | None, given: str | None) -> bool:
    if not nonce:
        return False
    return keys.verify(key, "login", nonce, given)
