"""Configuration: the targets file, tag policies, image names, settings.

A malformed config or a secret that is set but empty stops start-up with one line that
names the setting (``rollhook check-config``: tests/cli/test_local.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rollhook.images import ReferenceError, parse_reference
from rollhook.settings import ConfigError, load_settings
from rollhook.targets import (
    REPO_FORMS,
    TagPolicy,
    load_targets,
    parse_duration,
    parse_targets,
    repo_key,
)

GOOD = {
    "repo": "https://github.com/acme/llm-infra.git",
    "path": "environments/prod/anything-llm",
    "project": "anythingllm",
    "service": "anything-llm",
    "images": ["mintplexlabs/anythingllm"],
    "tags": "semver:>=1.16,<2",
    "health": {"url": "http://127.0.0.1:3001/api/ping", "timeout": "180s", "settle": "10s"},
}


def problems_of(**changes: object) -> list[str]:
    body = {**GOOD, **changes}
    body = {k: v for k, v in body.items() if v is not None}
    return parse_targets(yaml.safe_dump({"targets": {"llm": body}}))[1]


def test_the_documented_example_is_valid() -> None:
    targets, problems = parse_targets(yaml.safe_dump({"targets": {"llm": GOOD}}))
    assert problems == []
    target = targets["llm"]
    assert target.health.timeout == 180 and target.health.settle == 10
    assert target.image_refs[0].name == "docker.io/mintplexlabs/anythingllm"


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/acme/llm-infra.git",
        "http://git.lan/acme/llm-infra.git",
        "ssh://git@git.lan:2222/acme/llm-infra.git",
        "git://git.lan/acme/llm-infra.git",
        "git@github.com:acme/llm-infra.git",
        "file:///srv/git/llm-infra",
    ],
)
def test_every_repo_form_the_message_names_is_accepted(repo: str) -> None:
    assert problems_of(repo=repo) == []
    scheme = repo.split("://", maxsplit=1)[0] + "://" if "://" in repo else "git@host:path"
    assert scheme in REPO_FORMS


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"repo": None}, "targets.llm.repo: required"),
        (
            {"repo": "not a url"},
            "targets.llm.repo: must be a git URL: https://, http://, ssh://, git://, "
            "git@host:path or file://",
        ),
        ({"path": "../etc"}, "targets.llm.path: must be a path inside the repository"),
        ({"project": "Has Spaces"}, "targets.llm.project: use lowercase letters"),
        ({"images": ["mintplexlabs/anythingllm:1.16"]}, "list repositories without a tag"),
        ({"tags": "semver:not-a-range"}, "targets.llm.tags: invalid semver range"),
        ({"health": {"url": "ftp://x"}}, "targets.llm.health.url: must be an http"),
        ({"health": {"timeout": "ten"}}, "targets.llm.health.timeout: not a duration"),
        ({"health": {"timeout": "5s", "settle": "10s"}}, "settle must be shorter"),
        ({"env_files": ["relative.env"]}, "must be an absolute host path"),
        ({"strategy": "blue-green"}, "targets.llm.strategy:"),
        ({"surprise": 1}, "targets.llm.surprise: unknown key"),
        ({"repo": "https://bot:hunter2@github.com/acme/x.git"}, "not in the URL"),
        ({"branch": "main..evil"}, "targets.llm.branch: not a valid branch name"),
        ({"branch": "-upload-pack"}, "targets.llm.branch: not a valid branch name"),
        ({"compose_file": "../../etc/compose.yml"}, "targets.llm.compose_file: a file name"),
        (
            {"verify": {"commits": {"allowed_signers": "signers"}}},
            "targets.llm.verify.commits.allowed_signers: signers must be an absolute host path",
        ),
        ({"verify": {"commits": {}}}, "targets.llm.verify.commits: set exactly one of"),
        (
            {"windows": [{"deny": "Mon-Fri 08:00-18:00", "allow": "Sat 01:00-02:00"}]},
            "targets.llm.windows.0: set exactly one of allow or deny",
        ),
        ({"windows": [{"deny": "Mon-Fri 8-18"}]}, "targets.llm.windows.0: 'Mon-Fri 8-18': use"),
        (
            {"windows": [{"deny": "Mon 08:00-18:00", "tz": "CEST+2"}]},
            "targets.llm.windows.0: unknown time zone 'CEST+2'",
        ),
    ],
)
def test_each_problem_is_one_line_naming_the_key(changes: dict[str, object], expected: str) -> None:
    problems = problems_of(**changes)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert "\n" not in problems[0]


PROXY = {"listen": "127.0.0.1:8080", "port": 3001}


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        ({"port": 3001}, "targets.llm.proxy.listen: required"),
        ({**PROXY, "listen": "8080"}, "targets.llm.proxy.listen: use host:port"),
        ({**PROXY, "listen": "127.0.0.1:70000"}, "targets.llm.proxy.listen: use host:port"),
        ({**PROXY, "listen": "[1:2:3]:80"}, "targets.llm.proxy.listen: [1:2:3] is not an IPv6"),
        ({**PROXY, "port": 0}, "targets.llm.proxy.port: Input should be greater than"),
        ({**PROXY, "port": 65536}, "targets.llm.proxy.port: Input should be less than"),
        ({**PROXY, "hosts": ["llm.example.com/x"]}, "llm.example.com/x: not a DNS name"),
        ({**PROXY, "hosts": ["-llm.example.com"]}, "targets.llm.proxy.hosts: -llm.example"),
        ({**PROXY, "hosts": ["10.0.0.1"]}, "10.0.0.1: a DNS name, not an address"),
        ({**PROXY, "hosts": ["a.test", "A.test."]}, "A.test.: listed twice"),
        ({**PROXY, "hold": "soon"}, "targets.llm.proxy.hold: not a duration"),
        ({**PROXY, "hold": "0s"}, "targets.llm.proxy.hold: must be longer than 0s"),
        ({**PROXY, "tls": "internal"}, "targets.llm.proxy: tls: internal needs hosts"),
        ({**PROXY, "tls": "acme"}, "targets.llm.proxy.tls:"),
        ({**PROXY, "upstream": "x"}, "targets.llm.proxy.upstream: unknown key"),
    ],
)
def test_each_proxy_problem_is_one_line(proxy: dict[str, object], expected: str) -> None:
    problems = problems_of(proxy=proxy)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert "\n" not in problems[0]


def test_proxy_keys_are_normalised() -> None:
    proxy = {"listen": " :443", "hosts": ["LLM.Example.com."], "port": 3001, "hold": "90s"}
    targets, problems = parse_targets(
        yaml.safe_dump({"targets": {"llm": {**GOOD, "proxy": proxy}}})
    )
    assert problems == []
    parsed = targets["llm"].proxy
    assert parsed is not None
    assert (parsed.listen, parsed.hosts, parsed.hold, parsed.tls) == (
        ":443",
        ["llm.example.com"],
        90.0,
        "auto",
    )
    assert parse_targets(yaml.safe_dump({"targets": {"llm": GOOD}}))[0]["llm"].proxy is None


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ({"listen": ":8080"}, {"listen": "127.0.0.1:8080"}, "port 8080 is also on :8080"),
        ({"listen": ":443"}, {"listen": ":443", "hosts": ["b.test"]}, "both must name"),
        (
            {"listen": ":443", "hosts": ["a.test", "b.test"]},
            {"listen": ":443", "hosts": ["b.test"]},
            "targets.b.proxy.hosts: b.test also served by targets.a",
        ),
        ({"listen": ":443", "hosts": ["a.test"]}, {"listen": ":443", "hosts": ["b.test"]}, None),
        ({"listen": ":8080"}, {"listen": ":8081"}, None),
    ],
)
def test_targets_that_would_share_a_proxy_socket(
    first: dict[str, object], second: dict[str, object], expected: str | None
) -> None:
    doc = {
        "targets": {
            "a": {**GOOD, "project": "a", "proxy": {**first, "port": 3001}},
            "b": {**GOOD, "project": "b", "proxy": {**second, "port": 3002}},
        }
    }
    problems = parse_targets(yaml.safe_dump(doc))[1]
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0], problems


TOKEN = "ghp_R8xq2Lw0Zt5Vb7Nc1Md3Kf9Hj4Gs6Pa0Yu2E"


@pytest.mark.parametrize(
    "repo",
    [
        f"https://{TOKEN}@github.com/acme/llm-infra.git",
        f"https://x-access-token:{TOKEN}@github.com/acme/llm-infra.git",
        f"http://{TOKEN}@git.example.test/acme/llm-infra.git",
        f"ssh://git:{TOKEN}@github.com/acme/llm-infra.git",
    ],
)
def test_a_token_in_the_repo_url_is_refused_unechoed(tmp_path: Path, repo: str) -> None:
    assert problems_of(repo=repo) == [
        "targets.llm.repo: put credentials in ROLLHOOK_GIT_TOKEN, not in the URL "
        "(user:password@ or token@)"
    ]
    result = run_check_config(tmp_path, yaml.safe_dump({"targets": {"llm": GOOD | {"repo": repo}}}))
    assert result.returncode == 1
    assert "targets.llm.repo: put credentials in ROLLHOOK_GIT_TOKEN" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    # At start-up (every process loads the targets file this way): the same, unechoed.
    with pytest.raises(ConfigError) as caught:
        load_targets(tmp_path / "rollhook.yml")
    assert TOKEN not in str(caught.value) and "ROLLHOOK_GIT_TOKEN" in str(caught.value)


@pytest.mark.parametrize(
    "repo", ["git@github.com:acme/llm-infra.git", "ssh://git@github.com/acme/llm-infra.git"]
)
def test_an_ssh_login_name_is_not_a_credential(repo: str) -> None:
    assert problems_of(repo=repo) == []


def test_broken_yaml_and_clashing_projects() -> None:
    assert "not valid YAML (line 3)" in parse_targets("targets:\n  llm: [\n")[1][0]
    assert parse_targets("- a list")[1] == ["config: expected a mapping with a 'targets:' mapping"]
    doc = {"targets": {"a": GOOD, "b": GOOD}}
    assert "'anythingllm' is also used by a" in parse_targets(yaml.safe_dump(doc))[1][0]


@pytest.mark.parametrize(
    ("policy", "tag", "allowed"),
    [
        ("exact:1.16.1", "1.16.1", True),
        ("exact:1.16.1", "1.16.2", False),
        ("glob:1.*", "1.16.2", True),
        ("glob:1.*", "2.0.0", False),
        ("1.16.*", "1.16.9", True),  # no prefix: a glob
        ("semver:>=1.16,<2", "1.16.0", True),
        ("semver:>=1.16,<2", "v1.17.3", True),
        ("semver:>=1.16,<2", "2.0.0", False),
        ("semver:>=1.16,<2", "1.17.0-rc1", False),  # no pre-releases
        ("semver:>=1.16,<2", "latest", False),
    ],
)
def test_tag_policies(policy: str, tag: str, allowed: bool) -> None:
    assert TagPolicy(policy).allows(tag) is allowed


@pytest.mark.parametrize(
    ("text", "name", "tag"),
    [
        ("mintplexlabs/anythingllm", "docker.io/mintplexlabs/anythingllm", None),
        (
            "docker.io/mintplexlabs/anythingllm:1.16.1",
            "docker.io/mintplexlabs/anythingllm",
            "1.16.1",
        ),
        ("index.docker.io/library/ubuntu", "docker.io/library/ubuntu", None),
        ("ubuntu:24.04", "docker.io/library/ubuntu", "24.04"),
        ("ghcr.io/Mintplex-Labs/anything-llm".lower(), "ghcr.io/mintplex-labs/anything-llm", None),
        ("127.0.0.1:5000/acme/app:2", "127.0.0.1:5000/acme/app", "2"),
        ("localhost/app", "localhost/app", None),
    ],
)
def test_image_names_are_normalised(text: str, name: str, tag: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.name, ref.tag) == (name, tag)


@pytest.mark.parametrize("text", ["", "UPPER/case", "repo:tag with space", "a@sha256:xyz"])
def test_bad_image_references_are_refused(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)


def test_repository_urls_compare_across_forms() -> None:
    assert repo_key("https://github.com/Acme/Infra.git") == "github.com/acme/infra"
    assert repo_key("git@github.com:acme/infra.git") == "github.com/acme/infra"
    assert repo_key("ssh://git@github.com/acme/infra") == "github.com/acme/infra"


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("3m") == 180
    assert parse_duration(7) == 7
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("name", "value"), [("ROLLHOOK_GITLAB_TOKEN", "  "), ("ROLLHOOK_GITHUB_SECRET", " , ")]
)
def test_a_secret_set_but_empty_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # An empty secret would fail closed forever (or, worse, open): stop and say which.
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{name}: is set but empty"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROLLHOOK_GITHUB_SECRET", "fifteen-chars-x"),
        ("ROLLHOOK_GITHUB_SECRET", "new-secret-0123456789, old-short"),  # during a rotation
        ("ROLLHOOK_GITLAB_TOKEN", "short"),
        ("ROLLHOOK_REGISTRY_TOKEN", "short"),
        ("ROLLHOOK_DOCKERHUB_TOKEN", "short"),
        ("ROLLHOOK_HARBOR_TOKEN", "Basic c2hvcnQ="),
        ("ROLLHOOK_API_TOKEN", "short"),
        ("ROLLHOOK_METRICS_TOKEN", "short"),
    ],
)
def test_a_short_inbound_secret_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A right secret is never refused, so answers tell guesses apart as fast as they come:
    only a long secret makes guessing hopeless. The line names the setting, never the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{name}: is shorter than 16 characters; use a long random one (openssl rand -base64 32)"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    monkeypatch.setenv(name, "0123456789abcdef")  # 16 is enough
    load_settings()


def test_outbound_credentials_are_not_ours_to_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLHOOK_SLACK_TOKEN", "xoxb-1")
    monkeypatch.setenv("ROLLHOOK_GIT_TOKEN", "t")
    assert load_settings().git_token is not None


def test_secrets_come_from_files_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("one-0123456789abcdef, two-0123456789abcdef\n")
    monkeypatch.setenv("ROLLHOOK_GITHUB_SECRET_FILE", str(tmp_path / "secret"))
    assert load_settings().github_secrets() == [b"one-0123456789abcdef", b"two-0123456789abcdef"]
    monkeypatch.setenv("ROLLHOOK_GITHUB_SECRET", "inline-0123456789abcdef")
    with pytest.raises(ConfigError, match="both set"):
        load_settings()
    monkeypatch.delenv("ROLLHOOK_GITHUB_SECRET")
    monkeypatch.setenv("ROLLHOOK_GITHUB_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ROLLHOOK_GITHUB_SECRET_FILE: cannot read"):
        load_settings()


def run_check_config(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rollhook.yml").write_text(config)
    env = {"PATH": "/usr/bin:/bin", "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# -- sync: the reconcile loop ---------------------------------------------------------


def test_sync_defaults_and_keys() -> None:
    targets, problems = parse_targets(yaml.safe_dump({"targets": {"llm": GOOD}}))
    assert problems == []
    sync = targets["llm"].sync
    assert (sync.interval, sync.auto, sync.self_heal, sync.prune) == (180.0, True, True, True)
    assert sync.heals_allowed == (3, 3600.0) and sync.write_back is None
    body = {
        **GOOD,
        "sync": {
            "interval": "30s",
            "auto": False,
            "heal_limit": "5 / 10m",
            "write_back": {"file": ".env", "variable": "ANYTHINGLLM_VERSION", "branch": "main"},
        },
    }
    sync = parse_targets(yaml.safe_dump({"targets": {"llm": body}}))[0]["llm"].sync
    assert (sync.interval, sync.auto, sync.heals_allowed) == (30.0, False, (5, 600.0))
    assert sync.write_back is not None and not sync.write_back.compose
    compose = {"file": "docker-compose.yml", "service": "anything-llm"}
    parsed = parse_targets(
        yaml.safe_dump({"targets": {"llm": {**GOOD, "sync": {"write_back": compose}}}})
    )
    assert parsed[1] == [] and parsed[0]["llm"].sync.write_back.compose  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("sync", "expected"),
    [
        ({"interval": "soon"}, "targets.llm.sync.interval: not a duration"),
        ({"interval": "2s"}, "targets.llm.sync.interval: poll at most every 5s"),
        ({"heal_limit": "3"}, "targets.llm.sync.heal_limit: not a heal limit"),
        ({"heal_limit": "0/1h"}, "targets.llm.sync.heal_limit: a heal limit needs at least 1"),
        ({"heal_limit": "3/forever"}, "targets.llm.sync.heal_limit: not a duration"),
        ({"auto": "maybe"}, "targets.llm.sync.auto:"),
        ({"surprise": 1}, "targets.llm.sync.surprise: unknown key"),
        ({"write_back": {"file": ".env"}}, "write_back: .env needs variable"),
        ({"write_back": {"file": "../x.env", "variable": "V"}}, "write_back.file: a file inside"),
        ({"write_back": {"file": ".env", "variable": "A-B"}}, "write_back.variable: a variable"),
        (
            {"write_back": {"file": "compose.yaml", "variable": "V"}},
            "a compose file takes service",
        ),
        ({"write_back": {"file": "compose.yml"}}, "a compose file needs service"),
        ({"write_back": {"variable": "V", "branch": "a..b"}}, "write_back.branch: not a valid"),
    ],
)
def test_each_sync_problem_is_one_line(sync: dict[str, object], expected: str) -> None:
    problems = problems_of(sync=sync)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_newer_tags_are_followed_only_under_a_written_policy() -> None:
    targets, _ = parse_targets(yaml.safe_dump({"targets": {"llm": GOOD}}))
    assert targets["llm"].follows_newer_tags  # semver:>=1.16,<2, written by the operator
    default = {k: v for k, v in GOOD.items() if k != "tags"}
    targets, _ = parse_targets(yaml.safe_dump({"targets": {"llm": default}}))
    assert not targets["llm"].follows_newer_tags  # glob:* by default: any tag at all
    exact = parse_targets(yaml.safe_dump({"targets": {"llm": {**GOOD, "tags": "exact:1.16.1"}}}))
    assert not exact[0]["llm"].follows_newer_tags


@pytest.mark.parametrize(
    ("policy", "candidate", "current", "newer"),
    [
        ("semver:>=1,<2", "1.17.0", "1.16.2", True),
        ("semver:>=1,<2", "v1.17.0", "1.16.2", True),
        ("semver:>=1,<2", "1.16.2", "1.16.2", False),
        ("semver:>=1,<2", "1.15.0", "1.16.2", False),
        ("glob:1.*", "1.10-alpine", "1.9-alpine", True),
        ("glob:1.*", "1.9-alpine", "1.10-alpine", False),
        ("glob:1.*", "1.17", "latest", False),  # latest is not in the policy's order
        ("glob:*", "zzz", None, False),
    ],
)
def test_newer_in_the_policys_order(
    policy: str, candidate: str, current: str | None, newer: bool
) -> None:
    assert TagPolicy(policy).newer(candidate, current) is newer
