"""Write-back: the rewrites (pure, table-style) and the commit and push on the real git
server, including a push that loses the race to someone else's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.gitserver import GitServer
from workers.gitsync import GitRepo
from workers.writeback import Moved, rewrite_compose, rewrite_env

D = "sha256:" + "ab" * 32
MOVED = Moved("anything-llm", "127.0.0.1:5000/acme/llm", "1.16.2", D)
NOTE = f"# rollhook: 127.0.0.1:5000/acme/llm:1.16.2@{D}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nLLM_VERSION=1.16.1\nB=2\n", f"A=1\n{NOTE}\nLLM_VERSION=1.16.2\nB=2\n"),
        ('LLM_VERSION="1.16.1"\n', f'{NOTE}\nLLM_VERSION="1.16.2"\n'),
        ("export LLM_VERSION=1.16.1\n", f"{NOTE}\nexport LLM_VERSION=1.16.2\n"),
        # the comment of an earlier write-back is replaced, not stacked
        ("# rollhook: x:1@sha256:0\nLLM_VERSION=1.16.1\n", f"{NOTE}\nLLM_VERSION=1.16.2\n"),
        ("LLM_VERSION_OLD=1\n", None),  # no such variable
        (None, None),
    ],
)
def test_rewriting_an_env_file(text: str | None, expected: str | None) -> None:
    assert rewrite_env(text, "LLM_VERSION", MOVED) == expected


COMPOSE = """services:
  db:
    image: postgres:16
  anything-llm:
    image: 127.0.0.1:5000/acme/llm:1.16.1   # pinned
    restart: unless-stopped
"""


@pytest.mark.parametrize(
    ("text", "service", "expected_line"),
    [
        (COMPOSE, "anything-llm", f"    image: 127.0.0.1:5000/acme/llm:1.16.2  {NOTE}"),
        (
            COMPOSE.replace("llm:1.16.1   # pinned", f"llm:1.16.1@{D}"),
            "anything-llm",
            f"    image: 127.0.0.1:5000/acme/llm:1.16.2  {NOTE}",
        ),
        (
            COMPOSE.replace(
                "image: 127.0.0.1:5000/acme/llm:1.16.1", "image: '127.0.0.1:5000/acme/llm:1.16.1'"
            ),
            "anything-llm",
            f"    image: '127.0.0.1:5000/acme/llm:1.16.2'  {NOTE}",
        ),
        (COMPOSE.replace("127.0.0.1:5000/acme/llm:1.16.1", "acme/llm:${V}"), "anything-llm", None),
        (COMPOSE, "missing", None),
    ],
)
def test_rewriting_a_compose_file(text: str, service: str, expected_line: str | None) -> None:
    result = rewrite_compose(text, service, MOVED)
    if expected_line is None:
        assert result is None
        return
    assert result is not None
    assert expected_line in result.splitlines()
    assert "    image: postgres:16" in result.splitlines()  # the other service untouched


def _log(repo_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo_dir), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_push_that_lost_the_race_is_re_applied_on_the_new_head(
    git_server: GitServer, tmp_path: Path
) -> None:
    repo = git_server.create_repo("write-back")
    repo.commit({"infra/.env": "LLM_VERSION=1.16.1\n"}, message="start")
    git = GitRepo(repo.url, tmp_path / "mirror")
    calls: list[str | None] = []

    def rewrite(text: str | None) -> str | None:
        calls.append(text)
        if len(calls) == 1:  # someone pushes while we commit
            repo.commit({"infra/README": "hello\n"}, message="someone else")
        return rewrite_env(text, "LLM_VERSION", MOVED)

    message = f"rollhook: llm 127.0.0.1:5000/acme/llm:1.16.2 ({D})"
    sha = git.change_file("main", "infra/.env", rewrite, message)
    assert sha is not None and repo.head() == sha
    assert len(calls) == 2  # rejected once, fetched, re-applied

    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", repo.url, str(clone)], check=True)
    assert (clone / "infra/.env").read_text() == f"{NOTE}\nLLM_VERSION=1.16.2\n"
    assert (clone / "infra/README").read_text() == "hello\n"  # theirs kept: never forced
    assert (
        _log(clone, "log", "-1", "--format=%an <%ae>|%s")
        == f"rollhook <rollhook@localhost>|{message}"
    )
    # The commit was made in a scratch clone: the mirror itself never held it.
    mirror = subprocess.run(
        ["git", "-C", str(tmp_path / "mirror"), "cat-file", "-e", f"{sha}^{{commit}}"],
        check=False, capture_output=True,
    )  # fmt: skip
    assert mirror.returncode != 0

    # The branch already says it: nothing to commit.
    assert git.change_file("main", "infra/.env", rewrite, message) is None
    assert repo.head() == sha
