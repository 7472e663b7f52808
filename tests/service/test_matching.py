"""Hints to targets: which configured targets look again, and why none when none does."""

from __future__ import annotations

import pytest

from rollhook.images import parse_reference
from rollhook.targets import parse_targets, repo_key
from service.matching import Matcher
from service.sources import GitPush, Hints, Ignored, ImagePush, Push
from tests.service.support import TARGETS_YAML


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    targets, problems = parse_targets(TARGETS_YAML)
    assert not problems
    return Matcher(targets)


def git(url: str, branch: str = "main", changed: set[str] | None = None) -> Hints:
    push = GitPush(
        repo_keys=frozenset({repo_key(url)}),
        repository=url,
        branch=branch,
        after="c" * 40,
        changed=None if changed is None else frozenset(changed),
    )
    return Hints("github", "push", "k", "d", None, (push,))


def image(*pushes: tuple[str, str, str]) -> Hints:
    items: tuple[Push, ...] = tuple(
        ImagePush(parse_reference(ref), tag, None, order=order) for ref, tag, order in pushes
    )
    return Hints("registry", "image", "k", "d", None, items)


INFRA = "https://github.com/acme/llm-infra.git"


def names(matcher: Matcher, hints: Hints) -> set[str]:
    matched = matcher.match(hints)
    assert isinstance(matched, dict), matched
    return set(matched)


def test_https_and_ssh_urls_name_the_same_repository(matcher: Matcher) -> None:
    # infra is configured with git@github.com:..., infra-staging with https without .git
    assert names(matcher, git(INFRA)) == {"infra", "infra-staging"}
    assert names(matcher, git("git@github.com:ACME/llm-infra")) == {"infra", "infra-staging"}


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"environments/prod/anything-llm/docker-compose.yml"}, {"infra"}),
        ({"environments/staging/.env"}, {"infra-staging"}),
        (
            {"environments/prod/anything-llm/.env", "environments/staging/x"},
            {"infra", "infra-staging"},
        ),
        (None, {"infra", "infra-staging"}),  # unsure: queue it, the worker diffs
    ],
)
def test_path_filter(matcher: Matcher, changed: set[str] | None, expected: set[str]) -> None:
    matched = matcher.match(git(INFRA, changed=changed))
    assert isinstance(matched, dict)
    assert set(matched) == expected


def test_a_folder_named_like_the_path_prefix_is_not_under_it(matcher: Matcher) -> None:
    matched = matcher.match(
        git(INFRA, changed={"environments/prod/anything-llm-old/x", "README.md"})
    )
    assert matched == Ignored("no watched path changed")


@pytest.mark.parametrize(
    ("hints", "reason"),
    [
        (git("https://github.com/acme/unknown.git"), "unknown repository"),
        (git(INFRA, branch="develop"), "another branch"),
        (git(INFRA, changed=set()), "no watched path changed"),
        (image(("quay.io/acme/other", "1.0", "")), "unknown image"),
        (image(("mintplexlabs/anythingllm", "2.0.0", "")), "tag outside policy"),
        (image(("registrycluster.local/library/test", "latest", "")), "tag outside policy"),
        (image(("registrycluster.local/library/test", "2.0.0", "")), "tag outside policy"),
    ],
)
def test_reasons_when_nothing_matches(matcher: Matcher, hints: Hints, reason: str) -> None:
    matched = matcher.match(hints)
    assert isinstance(matched, Ignored)
    assert matched.reason == reason


def test_an_unknown_repository_is_named_as_it_was_compared(matcher: Matcher) -> None:
    matched = matcher.match(git("https://GitHub.com/acme/Unknown.git"))
    assert matched == Ignored("unknown repository", "no target's repo is github.com/acme/unknown")


def test_image_matching_normalises_docker_hub_names(matcher: Matcher) -> None:
    for ref in (
        "mintplexlabs/anythingllm",
        "docker.io/mintplexlabs/anythingllm",
        "index.docker.io/mintplexlabs/anythingllm",
    ):
        assert names(matcher, image((ref, "1.16.1", ""))) == {"infra"}


def test_semver_and_exact_policies(matcher: Matcher) -> None:
    assert names(matcher, image(("registrycluster.local/library/test", "1.4.2", ""))) == {
        "registry"
    }
    assert names(matcher, image(("hub.harbor.com/test-webhook/debian", "latest", ""))) == {"harbor"}


def test_newest_push_wins_per_target_and_the_best_reason_is_kept(matcher: Matcher) -> None:
    hints = image(
        ("mintplexlabs/anythingllm", "1.2", "2024-01-01T00:00:02"),
        ("mintplexlabs/anythingllm", "1.3", "2024-01-01T00:00:03"),
        ("mintplexlabs/anythingllm", "1.1", "2024-01-01T00:00:01"),
        ("quay.io/acme/other", "9", "2024-01-01T00:00:09"),
    )
    matched = matcher.match(hints)
    assert isinstance(matched, dict)
    push = matched["infra"]
    assert isinstance(push, ImagePush)
    assert push.tag == "1.3"
    nothing = matcher.match(image(("quay.io/x/y", "1", ""), ("mintplexlabs/anythingllm", "9", "")))
    assert nothing == Ignored("tag outside policy", "9")


def test_one_delivery_can_queue_several_targets(matcher: Matcher) -> None:
    hints = image(
        ("mintplexlabs/anythingllm", "1.2", "2024-01-01T00:00:01"),
        ("registrycluster.local/library/test", "1.0.0", "2024-01-01T00:00:02"),
        ("registrycluster.local/library/test", "latest", "2024-01-01T00:00:03"),  # not followed
    )
    matched = matcher.match(hints)
    assert isinstance(matched, dict)
    assert {name: p.tag for name, p in matched.items() if isinstance(p, ImagePush)} == {
        "infra": "1.2",
        "registry": "1.0.0",
    }
