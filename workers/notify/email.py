"""Email over SMTP: ``smtp://`` (plain), ``smtp+starttls://`` and ``smtps://`` (TLS from the
first byte), with ``user:password@`` credentials in the URL; and the notifier that mails
a notice (one email per notice, never twice).

Every connection has a timeout. Certificates are verified with the system's trust store
(``SSL_CERT_FILE`` points OpenSSL elsewhere, e.g. at a private CA). The password lives
only in this object; errors quote the server's reply code and text, never the URL.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from workers.notify import backup_notice, letter, wording
from workers.notify.backup_notice import BackupNotice
from workers.notify.channels import Channel, Delivery
from workers.notify.errors import PermanentError, TransientError
from workers.notify.host_notice import HostNotice
from workers.notify.letter import Letter
from workers.notify.notices import Notice, TargetNotice

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_SCHEMES: dict[str, tuple[Literal["plain", "starttls", "tls"], int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


@dataclass(frozen=True)
class SmtpServer:
    security: Literal["plain", "starttls", "tls"]
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """Read ``ROLLHOOK_SMTP_URL``; errors name the setting and never echo the URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in _SCHEMES:
        raise ValueError("ROLLHOOK_SMTP_URL: use smtp://, smtp+starttls:// or smtps://")
    if not parts.hostname:
        raise ValueError("ROLLHOOK_SMTP_URL: no host")
    security, default_port = _SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError("ROLLHOOK_SMTP_URL: the port is not a number") from None
    if security == "plain" and parts.password and parts.hostname not in _LOOPBACK:
        raise ValueError(
            "ROLLHOOK_SMTP_URL: credentials over plain smtp:// would cross the network in "
            "clear; use smtp+starttls:// or smtps://"
        )
    return SmtpServer(
        security=security,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class Mailer:
    """Send one multipart (text + HTML) email to the configured recipients."""

    def __init__(
        self,
        url: str,
        sender: str,
        recipients: list[str],
        timeout: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not recipients:
            raise ValueError("ROLLHOOK_EMAIL_TO: no recipients")
        self.server = parse_smtp_url(url)
        self.sender = sender
        self.recipients = list(recipients)
        self.timeout = timeout
        self._tls = ssl_context or ssl.create_default_context()

    def compose(self, letter: Letter, message_id: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = letter.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(usegmt=True)
        # The same id for the same deployment lets mail systems drop a duplicate too.
        message["Message-ID"] = message_id
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        message.set_content(letter.text)
        message.add_alternative(letter.html, subtype="html")
        return message

    def send(self, letter: Letter, message_id: str) -> list[str]:
        """Send it; return the recipients the server refused (when others accepted)."""
        message = self.compose(letter, message_id)
        try:
            with self._connect() as smtp:
                refused = smtp.send_message(message, self.sender, self.recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            kind = TransientError if all(400 <= c < 500 for c in codes) else PermanentError
            raise kind(f"smtp: every recipient refused ({sorted(set(codes))})") from exc
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            reply = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            what = f"smtp: {type(exc).__name__} {exc.smtp_code} {reply[:160]}"
            if 400 <= exc.smtp_code < 500:
                raise TransientError(what) from exc
            raise PermanentError(what) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"smtp: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"smtp: certificate not trusted: {exc.verify_message}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"smtp: {type(exc).__name__}: {str(exc)[:160]}") from exc
        return sorted(refused)

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        smtp: smtplib.SMTP
        if server.security == "tls":
            smtp = smtplib.SMTP_SSL(
                server.host, server.port, timeout=self.timeout, context=self._tls
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if server.security == "starttls":
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if server.username is not None:
                smtp.login(server.username, server.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


@dataclass(frozen=True)
class EmailNotifier:
    """One email per notice, at its end; the notification id is its Message-ID."""

    mailer: Mailer
    channel: ClassVar[Channel] = "email"
    tells_progress: ClassVar[bool] = False

    def send(self, notice: Notice, delivery: Delivery) -> str:
        if delivery.sent.get("sent"):
            return "already sent"
        if isinstance(notice, TargetNotice):
            mail = letter.about_target(notice)
        elif isinstance(notice, (BackupNotice, HostNotice)):
            mail = backup_notice.letter(notice)
        else:
            mail = letter.compose(notice.report, notice.view)
        refused = self.mailer.send(mail, f"<{delivery.notification_id}@rollhook>")
        delivery.keep({"sent": True, "refused": refused})
        to = wording.plural(len(self.mailer.recipients) - len(refused), "recipient")
        return f"sent to {to}" + (f"; refused: {', '.join(refused)}" if refused else "")
