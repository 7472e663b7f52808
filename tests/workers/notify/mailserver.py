"""A real SMTP server on loopback (aiosmtpd): plain, STARTTLS, implicit TLS, with AUTH.

The certificate is self-signed, made with the ``openssl`` CLI for 127.0.0.1; clients
trust it through an SSL context that loads it, as an operator's ``SSL_CERT_FILE`` would.
``refuse`` makes the server answer RCPT or DATA with a chosen reply, the way a relay
refuses mail it will not take.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.harness.ports import free_port


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None


@dataclass
class Mailbox:
    """The handler: keeps what arrived, refuses on request."""

    received: list[Received] = field(default_factory=list)
    refuse_rcpt: str | None = None  # e.g. "451 4.3.0 try again later"
    refuse_data: str | None = None
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = str(session.auth_data) if session.authenticated else None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 OK queued"


class Users:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.users.get(login) == password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


@contextmanager
def smtp_server(
    mode: str = "plain",
    cert: tuple[Path, Path] | None = None,
    users: dict[str, str] | None = None,
) -> Iterator[tuple[Mailbox, int]]:
    """``mode``: plain, starttls (required before AUTH and MAIL) or tls (smtps)."""
    mailbox = Mailbox()
    kwargs: dict[str, Any] = {}
    server_tls = None
    if mode in ("starttls", "tls"):
        assert cert is not None
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(str(cert[0]), str(cert[1]))
    if mode == "starttls":
        kwargs.update(tls_context=server_tls, require_starttls=True)
    elif mode == "tls":
        kwargs.update(ssl_context=server_tls)
    if users is not None and mode == "tls":
        # aiosmtpd only counts STARTTLS as TLS; on smtps the whole connection already
        # is, so AUTH is offered without its STARTTLS requirement (and not demanded,
        # which aiosmtpd would warn about on a connection it thinks is plain).
        kwargs.update(authenticator=Users(users), auth_require_tls=False)
    elif users is not None:
        kwargs.update(authenticator=Users(users), auth_required=True)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def client_tls(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))
