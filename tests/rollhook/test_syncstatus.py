"""A target's sync status and how far it is behind: pure functions, table-style."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rollhook.syncstatus import STATUSES, Facts, behind, images_in_use, sync_status
from rollhook.targets import TagPolicy, parse_targets
from tests.rollhook.test_config import GOOD


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (Facts(), "unknown"),
        (Facts(known=True), "synced"),
        (Facts(known=True, behind=True), "out_of_sync"),
        (Facts(behind=True), "unknown"),  # never polled nor deployed: nothing to compare
        (Facts(known=True, drifted=True, behind=True), "drifted"),
        (Facts(known=True, drifted=True, auto=False), "pending"),
        (Facts(known=True, waiting=True, auto=False), "pending"),
        (Facts(known=True, waiting=True), "synced"),  # auto: queued work counts as runnable
        (Facts(known=True, held=True), "pending"),  # a closed deploy window holds changes
        (Facts(known=True, held=True, runnable=True), "progressing"),  # a person's request
        (Facts(known=True, held=True, degraded=True), "degraded"),
        (Facts(known=True, degraded=True, drifted=True, auto=False), "degraded"),
        (Facts(known=True, degraded=True, running=True), "progressing"),
        (Facts(runnable=True), "progressing"),
        (Facts(known=True, paused=True, running=True, degraded=True), "paused"),
    ],
)
def test_the_status_is_the_first_that_holds(facts: Facts, expected: str) -> None:
    assert sync_status(facts) == expected
    assert expected in STATUSES


REPO = "127.0.0.1:5000/acme/anythingllm"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, []),
        ({"head": "a" * 40, "synced": "a" * 40}, []),
        ({"head": "b" * 40, "synced": "a" * 40}, [f"the branch is at {'b' * 12}, {'a' * 12} runs"]),
        ({"head": "b" * 40, "synced": None}, []),  # nothing runs to be behind of
        ({"observed": {f"{REPO}:stable": D1}}, []),
        ({"observed": {f"{REPO}:stable": D2}}, [f"{REPO}:stable moved to {D2[:19]}"]),
        ({"newest": {REPO: "1.1.0"}}, []),  # newer tags are not followed without a policy
        (
            {"newest": {REPO: "1.1.0"}, "policy": TagPolicy("semver:>=1")},
            [],  # stable is no version: nothing is newer than it
        ),
    ],
)
def test_behind_says_what_moved(given: dict[str, Any], expected: list[str]) -> None:
    values: dict[str, Any] = {
        "head": None,
        "synced": None,
        "running": {f"{REPO}:stable": D1},
        "observed": {},
        "newest": {},
        "policy": None,
    } | given
    assert behind(**values) == expected


def test_a_newer_allowed_tag_is_behind() -> None:
    lines = behind(
        head=None,
        synced=None,
        running={f"{REPO}:1.0.0": D1},
        observed={f"{REPO}:1.0.0": D1},
        newest={REPO: "1.2.0"},
        policy=TagPolicy("semver:>=1,<2"),
    )
    assert lines == [f"{REPO}:1.2.0 is newer than 1.0.0"]


def test_images_in_use_are_the_targets_repositories_only() -> None:
    target = parse_targets(yaml.safe_dump({"targets": {"llm": {**GOOD, "images": [REPO]}}}))[0][
        "llm"
    ]
    images = {
        "app": {"old": None, "new": f"{REPO}:1.0.0@{D1}"},
        "db": {"old": None, "new": f"docker.io/library/postgres:16@{D2}"},
        "untagged": {"old": None, "new": f"{REPO}@{D2}"},
        "broken": {"old": None, "new": "Not A Ref"},
    }
    assert images_in_use(target, images) == {f"{REPO}:1.0.0": D1}
