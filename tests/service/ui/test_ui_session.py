"""The dashboard's session and CSRF logic: pure functions, checked table-style."""

from __future__ import annotations

import pytest

from service.ui import csrf, keys
from service.ui.session import Session, id_of_cookie, is_tls, new_cookie, valid_name

KEY = keys.derive("api-token-for-the-session-tests")
OTHER_KEY = keys.derive("api-token-after-a-rotation-000")


def test_the_key_follows_the_api_token() -> None:
    assert keys.derive("api-token-for-the-session-tests") == KEY
    assert KEY != OTHER_KEY
    assert len(KEY) == 32


def test_a_new_cookie_stands_for_its_session_under_its_key_only() -> None:
    cookie, session_id = new_cookie(KEY)
    assert id_of_cookie(KEY, cookie) == session_id
    # A changed API token ends every session: the old cookies no longer verify.
    assert id_of_cookie(OTHER_KEY, cookie) is None
    # The stored id is not the cookie's secret (a copy of the table signs nobody in).
    secret = cookie.split(".", 1)[0]
    assert session_id != secret and secret not in session_id
    another, another_id = new_cookie(KEY)
    assert another != cookie and another_id != session_id


def _forged() -> list[str | None]:
    cookie, _ = new_cookie(KEY)
    secret, mac = cookie.split(".", 1)
    other_secret = new_cookie(KEY)[0].split(".", 1)[0]
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    return [
        None,
        "",
        secret,  # no MAC
        f"{secret}.",  # an empty MAC
        f".{mac}",  # no secret
        f"{secret}.{flipped}",  # one digit off
        f"{other_secret}.{mac}",  # another secret under this MAC
        f"{secret}.{mac.upper()}",  # the MAC in other letters
        f"{secret}.{mac}x",
        f"{secret}.{keys.sign(KEY, 'csrf', secret)}",  # signed, but for another purpose
        f"{secret}.{keys.sign(OTHER_KEY, 'session', secret)}",  # under another key
        f"{secret}.é{mac[1:]}",  # not ASCII: merely wrong, never an error
    ]


@pytest.mark.parametrize("cookie", _forged())
def test_a_cookie_that_was_not_issued_stands_for_nothing(cookie: str | None) -> None:
    assert id_of_cookie(KEY, cookie) is None


def test_csrf_tokens_are_per_session_and_per_key() -> None:
    _, first = new_cookie(KEY)
    _, second = new_cookie(KEY)
    token = csrf.session_token(KEY, first)
    assert csrf.session_token(KEY, first) == token  # the same on every form of a session
    assert csrf.session_token_valid(KEY, first, token)
    assert not csrf.session_token_valid(KEY, second, token)  # another session's token
    assert not csrf.session_token_valid(OTHER_KEY, first, token)  # the API token changed
    # A session's id itself is no token, nor its cookie MAC.
    assert not csrf.session_token_valid(KEY, first, first)
    assert not csrf.session_token_valid(KEY, first, keys.sign(KEY, "session", first))


@pytest.mark.parametrize("given", [None, "", "x", "0" * 64, "é" * 64])
def test_a_missing_or_made_up_csrf_token_is_refused(given: str | None) -> None:
    _, session_id = new_cookie(KEY)
    assert not csrf.session_token_valid(KEY, session_id, given)


def test_the_sign_in_form_pairs_its_token_with_its_cookie() -> None:
    nonce, token = csrf.login_pair(KEY)
    other_nonce, other_token = csrf.login_pair(KEY)
    assert nonce != other_nonce and token != other_token
    assert csrf.login_token_valid(KEY, nonce, token)
    assert not csrf.login_token_valid(KEY, nonce, other_token)
    assert not csrf.login_token_valid(KEY, other_nonce, token)
    assert not csrf.login_token_valid(KEY, None, token)  # no cookie
    assert not csrf.login_token_valid(KEY, nonce, None)  # no field
    # A planted cookie with its own value as the field (a plain double submit) fails.
    assert not csrf.login_token_valid(KEY, "planted", "planted")
    assert not csrf.login_token_valid(OTHER_KEY, nonce, token)
    # A session's CSRF token for an id equal to the nonce does not pass as the login one.
    assert not csrf.login_token_valid(KEY, nonce, csrf.session_token(KEY, nonce))


@pytest.mark.parametrize(
    ("scheme", "peer_trusted", "forwarded", "tls"),
    [
        ("https", False, None, True),
        ("https", False, "http", True),  # our own TLS whatever a header says
        ("http", False, None, False),
        ("http", False, "https", False),  # anybody can send the header
        ("http", True, None, False),
        ("http", True, "https", True),  # a trusted proxy says so
        ("http", True, "HTTPS", True),
        ("http", True, " https ", True),
        ("http", True, "http", False),
        ("http", True, "http, https", True),  # a hop took TLS: Secure only ever added
        ("http", True, "", False),
    ],
)
def test_tls_is_the_scheme_or_a_trusted_proxys_word(
    scheme: str, peer_trusted: bool, forwarded: str | None, tls: bool
) -> None:
    assert is_tls(scheme, peer_trusted, forwarded) is tls


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("alice", True),
        ("alice.smith@example.com", True),
        ("ops-team_2", True),
        ("a" * 40, True),
        ("a" * 41, False),
        ("", False),
        ("-alice", False),
        ("alice smith", False),
        ("alice\n[api] forged", False),
        ("alice\n", False),
        ("ali<ce", False),
        ("ålice", False),
    ],
)
def test_a_name_is_what_may_go_into_records_and_log_lines(name: str, valid: bool) -> None:
    assert valid_name(name) is valid


def test_a_session_acts_as_ui_and_its_name() -> None:
    assert Session("id", "alice", "token").actor == "ui:alice"
