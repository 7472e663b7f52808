"""Identifiers that sort by creation time (ULID layout: 48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
# Every webhook makes two ids: they are written ten bits (two characters) at a time.
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
_SHIFTS = tuple(range(120, -1, -10))  # 13 pairs = 26 characters = 130 bits


def new_id(prefix: str = "") -> str:
    return prefix + encode(time.time_ns() // 1_000_000 << 80 | secrets.randbits(80))


def encode(value: int) -> str:
    """A 128-bit value as 26 characters, most significant first (so they sort as numbers)."""
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])
