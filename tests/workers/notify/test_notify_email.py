"""Email through a real SMTP server on loopback: plain, STARTTLS with AUTH, smtps with AUTH."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from rollhook.settings import ConfigError
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.mailserver import client_tls, make_certificate, smtp_server
from workers.notify import Notifiers, RetryLater
from workers.notify.email import EmailNotifier, Mailer, parse_smtp_url

PASSWORD = "p@ss:w/rd%42"  # URL-quoted in the SMTP URL below
QUOTED = "p%40ss%3Aw%2Frd%2542"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _notifiers(url: str, cert: Path | None = None) -> Notifiers:
    built = notifiers_for(
        smtp_url=url,
        email_from="rollhook <rollhook@example.test>",
        email_to="ops@example.test, oncall@example.test",
    )
    email = built.get("email")
    if cert is not None and isinstance(email, EmailNotifier):
        mailer = Mailer(
            url, email.mailer.sender, email.mailer.recipients, ssl_context=client_tls(cert)
        )
        built = dataclasses.replace(
            built, by_channel={**built.by_channel, "email": EmailNotifier(mailer)}
        )
    return built


def _failed_deployment(flow: Flow, records: Engine) -> dict[str, Any]:
    record = rec.insert_running(records)
    flow.announce(record)
    return rec.finish(records, record, "rolled_back")


def test_plain_smtp_sends_one_multipart_email_with_a_telling_subject(
    records: Engine, target: Target
) -> None:
    with smtp_server("plain") as (mailbox, port):
        flow = Flow(records, _notifiers(f"smtp://127.0.0.1:{port}"), target)
        final = _failed_deployment(flow, records)
        ids = flow.report(final)
        assert flow.statuses(ids) == ["delivered"]
        assert flow.statuses(ids) == ["delivered"]

    [mail] = mailbox.received
    message = mail.message
    assert message["Subject"] == "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"
    assert mail.rcpt_tos == ["ops@example.test", "oncall@example.test"]
    assert (
        mail.mail_from == "rollhook <rollhook@example.test>"
        or "rollhook@example.test" in mail.mail_from
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    plain, markup = text.get_content(), html.get_content()
    assert "Failed step:" in plain and "gate: health probe" in plain
    assert "Rolled back to 1.16.1: rollback ok, rollback-gate ok." in plain
    assert "72d3162e-cc78-11e3-81ab-4c9367dc0958" in plain
    assert "12:01:59 app: Error: P1001 can't reach database <server> & retrying" in plain
    assert "&lt;server&gt; &amp; retrying" in markup  # escaped in HTML
    assert f'href="https://github.com/acme/llm-infra/commit/{final.commit}"' in markup
    assert "ghs_s3cr3tT0ken" not in plain + markup


def test_starttls_with_auth(
    records: Engine, target: Target, certificate: tuple[Path, Path]
) -> None:
    with smtp_server("starttls", certificate, users={"rollhook": PASSWORD}) as (mailbox, port):
        url = f"smtp+starttls://rollhook:{QUOTED}@127.0.0.1:{port}"
        flow = Flow(records, _notifiers(url, certificate[0]), target)
        record = rec.insert_running(records)
        assert flow.statuses(flow.report(rec.finish(records, record, "succeeded"))) == ["delivered"]
    [mail] = mailbox.received
    assert mail.authenticated_as == "rollhook"
    assert mail.message["Subject"] == "anythingllm: 1.16.2 deployed"
    row = flow.rows(record.id)["email"]
    assert PASSWORD not in json.dumps(row, default=str) and QUOTED not in json.dumps(
        row, default=str
    )


def test_smtps_with_auth(records: Engine, target: Target, certificate: tuple[Path, Path]) -> None:
    with smtp_server("tls", certificate, users={"rollhook": PASSWORD}) as (mailbox, port):
        url = f"smtps://rollhook:{QUOTED}@127.0.0.1:{port}"
        flow = Flow(records, _notifiers(url, certificate[0]), target)
        record = rec.insert_running(records)
        assert flow.statuses(flow.report(rec.finish(records, record, "failed"))) == ["delivered"]
    [mail] = mailbox.received
    assert mail.authenticated_as == "rollhook"
    assert mail.message["Subject"] == "anythingllm: 1.16.2 FAILED at gate, rollback FAILED"


def test_a_wrong_password_fails_for_good_and_is_not_recorded(
    records: Engine, target: Target, certificate: tuple[Path, Path]
) -> None:
    with smtp_server("starttls", certificate, users={"rollhook": PASSWORD}) as (mailbox, port):
        url = f"smtp+starttls://rollhook:hunter2-wrong@127.0.0.1:{port}"
        flow = Flow(records, _notifiers(url, certificate[0]), target)
        record = rec.insert_running(records)
        assert flow.statuses(flow.report(rec.finish(records, record, "failed"))) == ["failed"]
    assert mailbox.received == []
    row = flow.rows(record.id)["email"]
    assert "535" in row["history"][-1]["detail"]
    assert "hunter2" not in json.dumps(row, default=str)


def test_an_untrusted_certificate_is_refused(
    records: Engine, target: Target, certificate: tuple[Path, Path]
) -> None:
    with smtp_server("tls", certificate) as (mailbox, port):
        flow = Flow(records, _notifiers(f"smtps://127.0.0.1:{port}"), target)  # system CAs only
        record = rec.insert_running(records)
        assert flow.statuses(flow.report(rec.finish(records, record, "failed"))) == ["failed"]
    assert mailbox.received == []
    assert "certificate" in flow.rows(record.id)["email"]["history"][-1]["detail"]


def test_a_temporary_refusal_is_retried_and_then_sent_once(records: Engine, target: Target) -> None:
    with smtp_server("plain") as (mailbox, port):
        flow = Flow(records, _notifiers(f"smtp://127.0.0.1:{port}"), target)
        ids = flow.report(_failed_deployment(flow, records))
        mailbox.refuse_rcpt = "451 4.3.0 mailbox busy, try again later"
        [retry] = flow.deliver(ids)
        assert isinstance(retry, RetryLater)
        mailbox.refuse_rcpt = None
        assert flow.statuses(ids) == ["delivered"]
    assert len(mailbox.received) == 1


def test_no_email_for_quiet_results_or_when_the_target_turns_email_off(
    records: Engine, target: Target
) -> None:
    with smtp_server("plain") as (mailbox, port):
        notifiers = _notifiers(f"smtp://127.0.0.1:{port}")
        no_op = rec.insert_running(records)
        rec.set_status(records, no_op.id, status="no_op")
        assert Flow(records, notifiers, target).report(rec.get(records, no_op.id)) == []
        quiet = target.model_copy(
            update={"notify": target.notify.model_copy(update={"email": False})}
        )
        record = rec.insert_running(records)
        assert Flow(records, notifiers, quiet).report(rec.finish(records, record, "failed")) == []
    assert mailbox.received == []


@pytest.mark.parametrize(
    ("url", "security", "port", "user"),
    [
        ("smtp://mail.example.test", "plain", 25, None),
        ("smtp+starttls://u%40x:pw@mail.example.test", "starttls", 587, "u@x"),
        ("smtps://u:pw@mail.example.test:2465", "tls", 2465, "u"),
    ],
)
def test_smtp_urls(url: str, security: str, port: int, user: str | None) -> None:
    server = parse_smtp_url(url)
    assert (server.security, server.port, server.username) == (security, port, user)
    assert "pw" not in repr(server)


def test_half_an_email_configuration_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="ROLLHOOK_EMAIL_TO"):
        notifiers_for(smtp_url="smtp://127.0.0.1:25", email_from="rollhook@example.test")
    with pytest.raises(ConfigError, match="ROLLHOOK_SMTP_URL: use smtp://") as info:
        notifiers_for(smtp_url="http://user:secret@x", email_from="a@b", email_to="c@d")
    assert "secret" not in str(info.value)


def test_credentials_never_cross_the_network_in_clear() -> None:
    with pytest.raises(ValueError, match="credentials over plain smtp://"):
        parse_smtp_url("smtp://mailer:hunter2@mail.example.test")
    # Encrypted schemes, or a relay on this host, are fine.
    assert parse_smtp_url("smtp+starttls://mailer:hunter2@mail.example.test").password
    assert parse_smtp_url("smtp://mailer:hunter2@127.0.0.1:2525").password == "hunter2"
