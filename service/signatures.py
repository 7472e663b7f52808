"""Webhook authentication: pure functions over the raw bytes, compared in constant time.

Header values arrive as latin-1 text (HTTP's own encoding); they are compared as bytes
so that a non-ASCII value is merely wrong rather than an error. Every function answers
only yes or no: what was expected never leaves this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

SHA256_PREFIX = b"sha256="


def _bytes(value: str) -> bytes:
    return value.encode("latin-1", "replace")


def hub_signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value a sender with this secret would send."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


_HUB_SIGNATURE = re.compile(r"^\s*sha256=[0-9a-fA-F]{64}\s*$")


def hub_signature_shaped(signature: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` can be a signature at all: checked before the body
    is read, so that nobody gets megabytes buffered without even pretending to sign."""
    return signature is not None and _HUB_SIGNATURE.match(signature) is not None


def verify_hub_signature(body: bytes, signature: str | None, secrets: Sequence[bytes]) -> bool:
    """GitHub's (and Gitea's) ``X-Hub-Signature-256``: HMAC-SHA256 of the raw body.

    Any of several secrets may match, so that a secret can be rotated without
    dropping deliveries. SHA-1 signatures (``X-Hub-Signature``) are never accepted.
    """
    if not signature or not secrets:
        return False
    given = _bytes(signature.strip())
    if given[: len(SHA256_PREFIX)].lower() != SHA256_PREFIX:
        return False
    given = given[len(SHA256_PREFIX) :].lower()
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        # No early exit: the time taken does not tell which secret matched.
        matched |= hmac.compare_digest(expected, given)
    return matched


def verify_token(given: str | None, expected: str) -> bool:
    """A shared secret sent as is (GitLab's ``X-Gitlab-Token``, Docker Hub's URL token)."""
    if given is None:
        return False
    return hmac.compare_digest(_bytes(given), expected.encode())


def verify_bearer(authorization: str | None, expected: str) -> bool:
    """``Authorization: Bearer <token>`` (the scheme is case-insensitive)."""
    if authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return verify_token(token.strip(), expected)


def verify_harbor(authorization: str | None, expected: str) -> bool:
    """Harbor sends its policy's "Auth Header" verbatim as ``Authorization``.

    Operators write either the bare token or ``Bearer <token>`` there; both are accepted.
    """
    if authorization is None:
        return False
    value = authorization.strip()
    return verify_token(value, expected) | verify_bearer(value, expected)
