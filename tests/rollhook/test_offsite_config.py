"""backup.remote and backup.drill in the targets file, and restic's environment: each
problem in one line naming the key, secrets from NAME_FILE, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollhook.offsite import remote_problems, restic_environment
from rollhook.schedule import Schedule
from rollhook.settings import ConfigError
from rollhook.targets import parse_targets

BASE = """
targets:
  llm:
    repo: https://git.example.com/acme/infra.git
    project: llm
    service: anything-llm
    backup: {backup}
"""


def parse(backup: str) -> tuple[dict[str, object], list[str]]:
    return parse_targets(BASE.format(backup=backup))  # type: ignore[return-value]


def test_a_full_remote_configuration() -> None:
    targets, problems = parse(
        "{keep: 3, remote: {repository: 'sftp:backup@host:/rollhook', "
        "password_file: /run/secrets/restic, schedule: 'daily 03:00 Europe/Berlin', "
        "retention: {last: 2, daily: 7}, final_pass: stop, options: {sftp.command: ssh x}}, "
        "drill: weekly}"
    )
    assert problems == []
    backup = targets["llm"].backup  # type: ignore[attr-defined]
    remote = backup.remote
    assert remote.repository == "sftp:backup@host:/rollhook"
    assert remote.password_file == Path("/run/secrets/restic")
    assert remote.schedule == Schedule("daily", 3, 0, zone="Europe/Berlin")
    assert (remote.retention.last, remote.retention.daily, remote.retention.weekly) == (2, 7, 4)
    assert remote.final_pass == "stop" and remote.after_deploy
    assert remote.options == {"sftp.command": "ssh x"}
    assert backup.drill.schedule == Schedule("weekly") and backup.drill.port_env is None


def test_without_remote_nothing_changes() -> None:
    targets, problems = parse("{keep: 5}")
    assert problems == []
    assert targets["llm"].backup.remote is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("backup", "problem"),
    [
        ("{remote: {}}", "targets.llm.backup.remote.repository: required"),
        (
            "{remote: {repository: /r, schedule: 'daily 25:00'}}",
            "targets.llm.backup.remote.schedule: 'daily 25:00': the time of day is HH:MM",
        ),
        (
            "{remote: {repository: /r, schedule: 3}}",
            "targets.llm.backup.remote.schedule: a schedule is text",
        ),
        (
            "{remote: {repository: /r, retention: {daily: 0, weekly: 0, monthly: 0}}}",
            "targets.llm.backup.remote.retention: must keep something",
        ),
        (
            "{remote: {repository: /r, retention: {daily: -1}}}",
            "targets.llm.backup.remote.retention.daily: Input should be greater than",
        ),
        (
            "{remote: {repository: /r, final_pass: pause}}",
            "targets.llm.backup.remote.final_pass: Input should be 'none' or 'stop'",
        ),
        (
            "{remote: {repository: /r, password_file: secrets/restic}}",
            "targets.llm.backup.remote.password_file: secrets/restic must be an absolute host path",
        ),
        (
            "{remote: {repository: /r, typo: 1}}",
            "targets.llm.backup.remote.typo: unknown key",
        ),
        (
            "{remote: {repository: 'rest:https://user:hunter2-secret@host:8000/'}}",
            "targets.llm.backup.remote.repository: a password in the repository URL",
        ),
        ("{drill: weekly}", "targets.llm.backup: drill restores the latest remote snapshot"),
        (
            "{remote: {repository: /r}, drill: fortnightly}",
            "targets.llm.backup.drill.schedule: not a schedule: 'fortnightly'",
        ),
        (
            "{remote: {repository: /r}, drill: {schedule: weekly, port_env: 'SERVER PORT'}}",
            "targets.llm.backup.drill.port_env: 'SERVER PORT' is not an environment variable",
        ),
    ],
)
def test_each_problem_in_one_line(backup: str, problem: str) -> None:
    _, problems = parse(backup)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems[0]
    assert "hunter2" not in problems[0]


def test_restic_environment_takes_restic_variables_and_secret_files(tmp_path: Path) -> None:
    key_file = tmp_path / "aws-secret"
    key_file.write_text("s3cr3t-from-a-file\n")
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY_FILE": str(key_file),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/etc/aws/credentials",  # a path restic itself reads
        "B2_ACCOUNT_KEY": "b2key",
        "RESTIC_PASSWORD_FILE": "/run/secrets/restic",  # the target's, never passed on
        "RESTIC_REPOSITORY": "/elsewhere",
        "ROLLHOOK_API_TOKEN": "not-restics",
        "HOME": "/root",
    }
    assert restic_environment(environ) == {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-from-a-file",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/etc/aws/credentials",
        "B2_ACCOUNT_KEY": "b2key",
    }


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"AWS_SECRET_ACCESS_KEY": "x", "AWS_SECRET_ACCESS_KEY_FILE": "/f"},
            "AWS_SECRET_ACCESS_KEY and AWS_SECRET_ACCESS_KEY_FILE are both set",
        ),
        (
            {"B2_ACCOUNT_KEY_FILE": "/nonexistent/b2"},
            "B2_ACCOUNT_KEY_FILE: cannot read /nonexistent/b2",
        ),
    ],
)
def test_restic_environment_problems(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        restic_environment(environ)


def test_the_password_file_is_checked_on_this_host(tmp_path: Path) -> None:
    targets, _ = parse("{remote: {repository: /r}}")
    remote = targets["llm"].backup.remote  # type: ignore[attr-defined]
    assert remote_problems("llm", remote, {}) == [
        "targets.llm.backup.remote.password_file: not set, and RESTIC_PASSWORD_FILE is not "
        "in the environment"
    ]
    [given] = remote_problems("llm", remote, {"RESTIC_PASSWORD": "x"})
    assert "give the password as a file" in given
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert remote_problems("llm", remote, {"RESTIC_PASSWORD_FILE": str(empty)}) == [
        f"targets.llm.backup.remote.password_file: {empty} is empty"
    ]
    good = tmp_path / "good"
    good.write_text("long-password\n")
    good.chmod(0o640)
    assert remote_problems("llm", remote, {"RESTIC_PASSWORD_FILE": str(good)}) == []
    good.chmod(0o644)
    [everyone] = remote_problems("llm", remote, {"RESTIC_PASSWORD_FILE": str(good)})
    assert f"{good} can be read by every user" in everyone
    [missing] = remote_problems("llm", remote, {"RESTIC_PASSWORD_FILE": str(tmp_path / "no")})
    assert "cannot read" in missing
