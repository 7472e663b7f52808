"""Webhook authentication on raw bytes: accepts exactly the right credential, nothing else."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from service.signatures import (
    hub_signature,
    verify_bearer,
    verify_harbor,
    verify_hub_signature,
    verify_token,
)

BODY = b'{"ref":"refs/heads/main"}'


def sha256(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def sha1(secret: bytes, body: bytes) -> str:
    return "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()


def test_github_published_vector() -> None:
    """GitHub's documented example must verify, byte for byte."""
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_hub_signature(b"Hello, World!", header, [b"It's a Secret to Everybody"])
    assert hub_signature(b"It's a Secret to Everybody", b"Hello, World!") == header
    assert not verify_hub_signature(b"Hello, World!", header, [b"another secret"])
    assert not verify_hub_signature(b"Hello, World!!", header, [b"It's a Secret to Everybody"])


@pytest.mark.parametrize(
    ("header", "secrets", "accepted"),
    [
        (sha256(b"s1", BODY), [b"s1"], True),
        (sha256(b"s1", BODY).upper().replace("SHA256=", "sha256="), [b"s1"], True),
        # Rotation: the old and the new secret are both accepted while both are listed.
        (sha256(b"old", BODY), [b"new", b"old"], True),
        (sha256(b"new", BODY), [b"new", b"old"], True),
        (sha256(b"gone", BODY), [b"new", b"old"], False),
        (sha256(b"s1", BODY + b" "), [b"s1"], False),
        (sha256(b"s1", BODY)[:-1], [b"s1"], False),
        ("sha256=", [b"s1"], False),
        (sha256(b"s1", BODY).removeprefix("sha256="), [b"s1"], False),
        # SHA-1 is refused even when it is right.
        (sha1(b"s1", BODY), [b"s1"], False),
        ("sha1=" + sha256(b"s1", BODY).removeprefix("sha256="), [b"s1"], False),
        ("sha256=" + "é" * 64, [b"s1"], False),
        (None, [b"s1"], False),
        ("", [b"s1"], False),
        (sha256(b"s1", BODY), [], False),
    ],
)
def test_hub_signature_table(header: str | None, secrets: list[bytes], accepted: bool) -> None:
    assert verify_hub_signature(BODY, header, secrets) is accepted


@pytest.mark.parametrize(
    ("given", "accepted"),
    [
        ("tok-1", True),
        ("tok-2", False),
        ("tok-1 ", False),
        ("TOK-1", False),
        ("tok-", False),
        ("", False),
        (None, False),
        ("tök-1", False),
    ],
)
def test_plain_token_table(given: str | None, accepted: bool) -> None:
    assert verify_token(given, "tok-1") is accepted


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        ("Bearer tok-1", True),
        ("bearer tok-1", True),
        ("Bearer  tok-1 ", True),
        ("Bearer tok-2", False),
        ("Basic tok-1", False),
        ("tok-1", False),
        ("Bearer", False),
        ("", False),
        (None, False),
    ],
)
def test_bearer_table(authorization: str | None, accepted: bool) -> None:
    assert verify_bearer(authorization, "tok-1") is accepted


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        ("tok-1", True),  # Harbor sends its "Auth Header" verbatim
        ("Bearer tok-1", True),
        ("tok-2", False),
        ("Bearer tok-2", False),
        ("Basic tok-1", False),
        (None, False),
    ],
)
def test_harbor_table(authorization: str | None, accepted: bool) -> None:
    assert verify_harbor(authorization, "tok-1") is accepted
