"""Branch heads of a repository in one ``git ls-remote``, against the harness git server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port
from workers.errors import InfrastructureError, OperatorError
from workers.gitsync import GitRepo

COMPOSE = "services:\n  app:\n    image: example.test/app:1\n"


def _name(label: str) -> str:
    return f"heads-{label}-{uuid.uuid4().hex[:8]}"


def _advertisements(git_server: Any, repo: Any) -> int:
    """How many times a client asked the server for the repository's refs."""
    return sum(
        1
        for r in git_server.requests
        if r.path.startswith(f"/{repo.name}.git/info/refs") and r.status == 200
    )


def test_heads_of_several_branches_in_one_ls_remote(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("branches"))
    main = repo.commit({"docker-compose.yml": COMPOSE}, "main")
    release = repo.commit({"docker-compose.yml": COMPOSE + "#r\n"}, "release", branch="release")
    repo.commit({"x": "1"}, "a branch whose name ends like main", branch="feature/main")
    mirror = tmp_path / "mirror.git"
    git = GitRepo(repo.url, mirror, timeout=30)

    before = _advertisements(git_server, repo)
    assert git.heads(["main", "release", "no-such-branch", "main"]) == {
        "main": main,
        "release": release,
    }
    assert _advertisements(git_server, repo) == before + 1  # one ls-remote for them all
    assert not mirror.exists()  # a poll writes nothing

    newer = repo.commit({"x": "2"}, "moves main")
    assert git.heads(["main"]) == {"main": newer}
    assert git.heads(["no-such-branch"]) == {}
    assert git.heads([]) == {}
    assert _advertisements(git_server, repo) == before + 3  # none for an empty question


def test_heads_with_a_token(git_server: Any, tmp_path: Path) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    repo = git_server.create_repo(_name("private"), token=token)
    head = repo.commit({"docker-compose.yml": COMPOSE}, "first")

    assert GitRepo(repo.url, tmp_path / "m", token=token, timeout=30).heads(["main"]) == {
        "main": head
    }
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(OperatorError) as refused:
        GitRepo(repo.url, tmp_path / "m", token=wrong, timeout=30).heads(["main"])
    assert "ROLLHOOK_GIT_TOKEN" in str(refused.value)
    assert wrong not in str(refused.value)
    with pytest.raises(OperatorError):
        GitRepo(repo.url, tmp_path / "m", timeout=30).heads(["main"])


def test_heads_of_a_repository_that_cannot_be_asked(git_server: Any, tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/infra.git"
    with pytest.raises(InfrastructureError) as down:
        GitRepo(unreachable, tmp_path / "m", timeout=30).heads(["main"])
    assert "127.0.0.1" in str(down.value)

    missing = f"{git_server.base_url}/{_name('missing')}.git"
    with pytest.raises(OperatorError):
        GitRepo(missing, tmp_path / "m", timeout=30).heads(["main"])

    with pytest.raises(OperatorError, match="plain http"):
        GitRepo("http://git.example/infra.git", tmp_path / "m", token="t").heads(["main"])
