"""Dashboard sessions: an opaque, signed cookie that names a row of the records.

The cookie is ``<secret>.<mac>``: 32 random bytes and their HMAC under the key derived
from the API token (``keys.py``). The records keep the secret's SHA-256 with who signed
in and when the session expires (``rollhook/records/ui_sessions.py``). A session ends:
- after ``LIFETIME`` (the row's ``expires_at``, and the cookie's ``Max-Age``);
- at sign-out (its row is deleted: every web process sees it, the cookie is worthless);
- when the API token changes (no cookie signed under the old key verifies).

The cookie is HttpOnly, SameSite=Strict, scoped to ``/ui``, and Secure whenever the
browser reached us over TLS (``is_tls``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from rollhook.records import ui_sessions
from rollhook.records.schema import utcnow
from rollhook.records.ui_sessions import UiSession
from service.ui import csrf, keys

COOKIE = "rollhook_session"
LIFETIME = timedelta(hours=12)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,39}")


@dataclass(frozen=True)
class Session:
    """A signed-in person, as a page sees them."""

    id: str
    who: str
    csrf: str  # the token every form of this session carries

    @property
    def actor(self) -> str:
        """How the records name what this session does."""
        return f"ui:{self.who}"


def _id_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_cookie(key: bytes) -> tuple[str, str]:
    """A fresh cookie value and the id its session is stored under."""
    secret = secrets.token_urlsafe(32)
    return f"{secret}.{keys.sign(key, 'session', secret)}", _id_of(secret)


def id_of_cookie(key: bytes, cookie: str | None) -> str | None:
    """The stored id a cookie stands for, or None unless it was signed under ``key``."""
    if not cookie:
        return None
    secret, dot, mac = cookie.partition(".")
    if not dot or not secret or not keys.verify(key, "session", secret, mac):
        return None
    return _id_of(secret)


def valid_name(name: str) -> bool:
    """What a person may call themselves: it ends up in records and log lines."""
    return NAME.fullmatch(name) is not None


def is_tls(scheme: str, peer_trusted: bool, forwarded_proto: str | None) -> bool:
    """Whether the browser's own connection was TLS: this request's scheme, or what a
    trusted proxy says in X-Forwarded-Proto (any hop saying https: Secure is only ever
    added, and a cookie marked Secure by mistake fails loudly, at the next page)."""
    if scheme == "https":
        return True
    if not peer_trusted or not forwarded_proto:
        return False
    return "https" in (part.strip().lower() for part in forwarded_proto.split(","))


def sign_in(engine: Engine, key: bytes, who: str | None, client: str) -> tuple[str, Session]:
    """Store a new session; its cookie value and the session. ``who`` defaults to the
    session's short id, so that what it does is still told apart from other sessions."""
    cookie, session_id = new_cookie(key)
    now = utcnow()
    name = who or session_id[:8]
    row = UiSession(session_id, name, client[:64], now, now + LIFETIME)
    with engine.begin() as conn:
        ui_sessions.delete_expired(conn)
        ui_sessions.create(conn, row)
    return cookie, Session(session_id, name, csrf.session_token(key, session_id))


def current(engine: Engine, key: bytes, cookie: str | None) -> Session | None:
    """The session a request's cookie belongs to, if it is still valid."""
    session_id = id_of_cookie(key, cookie)
    if session_id is None:
        return None
    with engine.connect() as conn:
        row = ui_sessions.get(conn, session_id)
    if row is None:
        return None
    return Session(row.id, row.who, csrf.session_token(key, row.id))


def sign_out(engine: Engine, session_id: str) -> None:
    with engine.begin() as conn:
        ui_sessions.delete_one(conn, session_id)
