"""``verify.commits.range: true`` checks at most MAX_RANGE_COMMITS commits: a longer range
is refused with a reason that says what to do, never checked in part."""

from __future__ import annotations

import pytest

from workers.errors import OperatorError
from workers.signatures import MAX_RANGE_COMMITS, RangeTooLong, UnsignedCommit, range_to_check

OLD, NEW = "a" * 40, "b" * 40


def shas(count: int) -> list[str]:
    return [f"{n:040x}" for n in range(count)]


@pytest.mark.parametrize("count", [0, 1, MAX_RANGE_COMMITS])
def test_a_range_within_the_cap_is_checked_whole(count: int) -> None:
    assert range_to_check(OLD, NEW, shas(count)) == shas(count)


def test_a_longer_range_is_refused_with_what_to_do() -> None:
    assert MAX_RANGE_COMMITS == 200
    with pytest.raises(RangeTooLong) as refused:
        range_to_check(OLD, NEW, shas(MAX_RANGE_COMMITS + 1))
    said = str(refused.value)
    assert said.startswith("verify.commits.range: more than 200 commits from aaaaaaa to bbbbbbb")
    assert "--ref" in said and "nothing was deployed" in said
    # A refusal like an unsigned commit: the operator's to fix, the app untouched.
    assert isinstance(refused.value, UnsignedCommit) and isinstance(refused.value, OperatorError)
