"""``rollhook check-config`` explains each problem in the targets file in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.rollhook.test_config import GOOD, run_check_config


def test_check_config_explains_each_problem(tmp_path: Path) -> None:
    proxy = {"listen": "8080", "port": 3001}
    bad = yaml.safe_dump(
        {"targets": {"llm": {**GOOD, "tags": "semver:??", "surprise": 1, "proxy": proxy}}}
    )
    result = run_check_config(tmp_path, bad)
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == [
        "targets.llm.proxy.listen: use host:port, e.g. 127.0.0.1:8080 or :443",
        "targets.llm.surprise: unknown key",
        "targets.llm.tags: invalid semver range '??'",
    ]
    good = run_check_config(tmp_path, yaml.safe_dump({"targets": {"llm": GOOD}}))
    assert good.returncode == 0, good.stdout
    assert good.stdout.splitlines()[-1].endswith("OK, 1 target(s): llm")


def test_write_back_needs_push_credentials(tmp_path: Path) -> None:
    write_back = {"file": ".env", "variable": "ANYTHINGLLM_VERSION"}
    config = yaml.safe_dump({"targets": {"llm": {**GOOD, "sync": {"write_back": write_back}}}})
    result = run_check_config(tmp_path, config)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "targets.llm.sync.write_back: pushing needs ROLLHOOK_GIT_TOKEN or ROLLHOOK_GIT_SSH_KEY"
    ]


def _check_config_with(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    (tmp_path / "rollhook.yml").write_text(yaml.safe_dump({"targets": {"llm": GOOD}}))
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env={"PATH": "/usr/bin:/bin", "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout.splitlines()


def test_check_config_without_a_file_to_check_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env={"PATH": "/usr/bin:/bin", "ROLLHOOK_CONFIG": str(tmp_path / "missing.yml")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert (
        result.stdout
        == f"ROLLHOOK_CONFIG: cannot read {tmp_path / 'missing.yml'}: No such file or directory\n"
    )


def test_check_config_explains_a_public_host_it_cannot_serve(tmp_path: Path) -> None:
    code, lines = _check_config_with(tmp_path, ROLLHOOK_PUBLIC_HOST="10.0.0.1")
    assert (code, lines) == (1, ["ROLLHOOK_PUBLIC_HOST: 10.0.0.1: a DNS name, not an address"])
    code, lines = _check_config_with(
        tmp_path, ROLLHOOK_PUBLIC_HOST="hooks.example.com", ROLLHOOK_PUBLIC_LISTEN="443"
    )
    assert (code, lines) == (
        1,
        ["ROLLHOOK_PUBLIC_LISTEN: use host:port, e.g. 127.0.0.1:8080 or :443"],
    )
    code, lines = _check_config_with(tmp_path, ROLLHOOK_PUBLIC_HOST="hooks.example.com")
    assert code == 0
    assert lines[0].startswith("warning: ROLLHOOK_PUBLIC_HOST: the proxy reaches the web")
    code, lines = _check_config_with(
        tmp_path,
        ROLLHOOK_PUBLIC_HOST="hooks.example.com",
        ROLLHOOK_TRUSTED_PROXIES="127.0.0.1",
    )
    assert code == 0
    assert not any(line.startswith("warning: ROLLHOOK_PUBLIC_HOST") for line in lines)


def test_check_config_wants_the_signing_keys_on_this_host(tmp_path: Path) -> None:
    signers = tmp_path / "allowed_signers"
    rule = {"commits": {"allowed_signers": str(signers)}}
    config = yaml.safe_dump({"targets": {"llm": {**GOOD, "verify": rule}}})
    missing = run_check_config(tmp_path, config)
    assert missing.returncode == 1
    assert missing.stdout.splitlines() == [
        f"targets.llm.verify.commits.allowed_signers: {signers} does not exist on this host "
        "(or is not a file)"
    ]
    signers.write_text("ops@example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0 ops\n")
    present = run_check_config(tmp_path, config)
    assert present.returncode == 0, present.stdout
    both = {"commits": {"allowed_signers": str(signers), "gpg_keyring": str(signers)}}
    twice = run_check_config(
        tmp_path, yaml.safe_dump({"targets": {"llm": {**GOOD, "verify": both}}})
    )
    assert twice.stdout.splitlines() == [
        "targets.llm.verify.commits: set exactly one of allowed_signers (SSH) "
        "or gpg_keyring (GnuPG)"
    ]


def _two_hosts(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    targets = {"llm": {**GOOD, "host": "a"}, "db": {**GOOD, "project": "db", "host": "b"}}
    (tmp_path / "two.yml").write_text(yaml.safe_dump({"targets": targets}))
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env={"PATH": "/usr/bin:/bin", "ROLLHOOK_CONFIG": str(tmp_path / "two.yml"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout.splitlines()


def test_more_than_one_host_needs_redis_and_postgresql(tmp_path: Path) -> None:
    code, lines = _two_hosts(tmp_path)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == ["ROLLHOOK_REDIS_URL", "ROLLHOOK_DATABASE_URL"]
    assert "targets name 2 hosts (a, b)" in lines[0] and "rediss://" in lines[0]
    assert "PostgreSQL" in lines[1]
    code, lines = _two_hosts(tmp_path, ROLLHOOK_REDIS_URL="redis://127.0.0.1:1/0")
    assert (code, [line.split(":")[0] for line in lines]) == (1, ["ROLLHOOK_DATABASE_URL"])
    code, lines = _two_hosts(
        tmp_path,
        ROLLHOOK_REDIS_URL="redis://127.0.0.1:1/0",
        ROLLHOOK_DATABASE_URL="postgresql+psycopg://rollhook@127.0.0.1:1/rollhook",
    )
    assert code == 0, lines
    assert lines[-1].endswith("OK, 2 target(s): db, llm")
