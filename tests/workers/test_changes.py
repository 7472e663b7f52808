"""What a poll raises, and when the next poll is due: pure decisions, table-style."""

from __future__ import annotations

from typing import Any

import pytest

from rollhook.targets import TagPolicy
from workers.changes import Seen, what_changed
from workers.reconcile import MAX_BACKOFF, next_poll

A, B, C = "a" * 40, "b" * 40, "c" * 40
REPO = "127.0.0.1:5000/acme/anythingllm"
D1, D2, D3 = ("sha256:" + n * 64 for n in "123")
SEMVER = TagPolicy("semver:>=1,<3")


def decide(seen: Seen, **given: Any) -> tuple[list[Any], dict[str, Any]] | None:
    values: dict[str, Any] = {
        "deployed": A,
        "synced": A,
        "in_use": {f"{REPO}:1.0.0": D1},
        "raised": {},
        "policy": None,
    } | given
    found = what_changed(seen, **values)
    if found is None:
        return None
    shown = [
        (fields.get("ref"), fields["image"].tag if fields.get("image") else None)
        for fields in found.jobs
    ]
    return shown, found.raised


@pytest.mark.parametrize(
    ("seen", "given", "jobs", "raised"),
    [
        # nothing moved
        (Seen(A, {f"{REPO}:1.0.0": D1}), {}, None, None),
        # a commit whose webhook was lost
        (Seen(B), {}, [(B, None)], {"commit": B, "images": {}, "tags": {}}),
        # ...raised once: the next poll does not raise it again
        (Seen(B), {"raised": {"commit": B}}, None, None),
        # ...nor once the runner knows it runs (synced) though the record says another
        (Seen(B), {"deployed": A, "synced": B}, None, None),
        # nothing deployed yet: the head is deployed, once
        (
            Seen(A),
            {"deployed": None, "synced": None, "in_use": {}},
            [(A, None)],
            {"commit": A, "images": {}, "tags": {}},
        ),
        (
            Seen(A),
            {"deployed": None, "synced": None, "in_use": {}, "raised": {"commit": A}},
            None,
            None,
        ),
        # a re-pushed tag
        (
            Seen(A, {f"{REPO}:1.0.0": D2}),
            {},
            [(None, "1.0.0")],
            {"commit": None, "images": {f"{REPO}:1.0.0": D2}, "tags": {}},
        ),
        (Seen(A, {f"{REPO}:1.0.0": D2}), {"raised": {"images": {f"{REPO}:1.0.0": D2}}}, None, None),
        # moved again after that: raised again
        (
            Seen(A, {f"{REPO}:1.0.0": D3}),
            {"raised": {"images": {f"{REPO}:1.0.0": D2}}},
            [(None, "1.0.0")],
            {"commit": None, "images": {f"{REPO}:1.0.0": D3}, "tags": {}},
        ),
        # a newer tag, only when its policy is followed
        (Seen(A, {}, {REPO: "2.0.0"}), {}, None, None),
        (
            Seen(A, {}, {REPO: "2.0.0"}),
            {"policy": SEMVER},
            [(None, "2.0.0")],
            {"commit": None, "images": {}, "tags": {REPO: "2.0.0"}},
        ),
        (
            Seen(A, {}, {REPO: "2.0.0"}),
            {"policy": SEMVER, "raised": {"tags": {REPO: "2.0.0"}}},
            None,
            None,
        ),
        (Seen(A, {}, {REPO: "1.0.0"}), {"policy": SEMVER}, None, None),
        # a commit and a moved tag at once: two jobs (they coalesce into one deployment)
        (
            Seen(C, {f"{REPO}:1.0.0": D2}),
            {},
            [(C, None), (None, "1.0.0")],
            {"commit": C, "images": {f"{REPO}:1.0.0": D2}, "tags": {}},
        ),
    ],
)
def test_what_a_poll_raises(
    seen: Seen, given: dict[str, Any], jobs: list[Any] | None, raised: dict[str, Any] | None
) -> None:
    found = decide(seen, **given)
    if jobs is None:
        assert found is None
    else:
        assert found == (jobs, raised)


def test_a_moved_tag_carries_the_digest_seen() -> None:
    found = what_changed(
        Seen(A, {f"{REPO}:1.0.0": D2}),
        deployed=A,
        synced=A,
        in_use={f"{REPO}:1.0.0": D1},
        raised={},
        policy=None,
    )
    assert found is not None and found.kind == "image"
    [fields] = found.jobs
    image = fields["image"]
    assert image is not None and (image.repository, image.tag, image.digest) == (REPO, "1.0.0", D2)
    assert found.why == [f"{REPO}:1.0.0 moved to {D2[:19]}"]


@pytest.mark.parametrize(
    ("interval", "errors", "low", "high"),
    [
        (180.0, 0, 162.0, 198.0),  # +- 10%
        (180.0, 1, 360.0, 360.0),
        (180.0, 3, 1440.0, 1440.0),
        (180.0, 9, MAX_BACKOFF, MAX_BACKOFF),
        (7200.0, 2, 7200.0, 7200.0),  # never sooner than the interval
    ],
)
def test_next_poll_jitters_and_backs_off(
    interval: float, errors: int, low: float, high: float
) -> None:
    for jitter in (0.0, 0.5, 1.0):
        wait = next_poll(interval, errors, jitter=lambda j=jitter: j)
        assert low - 1e-9 <= wait <= high + 1e-9
    assert next_poll(interval, 0, jitter=lambda: 0.0) != next_poll(interval, 0, jitter=lambda: 1.0)
