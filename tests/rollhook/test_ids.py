"""Identifiers: ULID layout in lowercase Crockford base32, sortable by creation time."""

from __future__ import annotations

import time

import pytest

from rollhook.ids import encode, new_id

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0" * 26),
        (31, "0" * 25 + "z"),
        (32, "0" * 24 + "10"),
        (1023, "0" * 24 + "zz"),
        (1024, "0" * 23 + "100"),
        (2**128 - 1, "7" + "z" * 25),
        # 1 ms after the epoch, no random bits: the time sits in the first 10 characters.
        (1 << 80, "0000000001" + "0" * 16),
        (0x0123456789ABCDEF0123456789ABCDEF, "014d2pf2dbsqqg28t5cy4tqkff"),
    ],
)
def test_encode(value: int, text: str) -> None:
    assert encode(value) == text


def test_encode_agrees_with_base32_digit_by_digit() -> None:
    for value in (7 << 125, 0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A, 2**100 + 12345):
        digits = []
        rest = value
        for _ in range(26):
            rest, digit = divmod(rest, 32)
            digits.append(ALPHABET[digit])
        assert encode(value) == "".join(reversed(digits))


def test_new_ids_sort_by_time_and_differ() -> None:
    first = new_id("e")
    time.sleep(0.002)
    later = [new_id("e") for _ in range(1000)]
    assert all(first < other for other in later)
    assert len(set(later)) == 1000
    assert all(len(i) == 27 and i[0] == "e" and set(i[1:]) <= set(ALPHABET) for i in later)
    assert int(time.time() * 1000) - _millis(later[-1]) < 1000


def _millis(identifier: str) -> int:
    """The time part: the first 10 characters after the prefix (50 bits, 48 used)."""
    value = 0
    for char in identifier[1:11]:
        value = value * 32 + ALPHABET.index(char)
    return value
