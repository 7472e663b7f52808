"""The infra repository adapter, against real git repositories served over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tarfile
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from tests.harness import Listener
from tests.harness.gitserver import git_env
from workers import gitsync
from workers.errors import OperatorError
from workers.gitsync import GitRepo, scrub
from workers.procs import ProcessGroup

COMPOSE = "services:\n  app:\n    image: example.test/app:1\n"


def _mirror(tmp_path: Path, url: str, **kwargs: Any) -> GitRepo:
    return GitRepo(url, tmp_path / "mirror.git", timeout=30, **kwargs)


def _name(label: str) -> str:
    """The git server lives for the whole session: every repository needs its own name."""
    return f"gitsync-{label}-{uuid.uuid4().hex[:8]}"


def test_scrub_removes_secrets_and_url_credentials() -> None:
    text = "fatal: https://bot:s3cr3t-token@git.example/x.git said s3cr3t-token twice"
    out = scrub(text, ["s3cr3t-token", ""])
    assert "s3cr3t" not in out
    assert "https://***@git.example/x.git" in out


def test_fetch_resolve_and_export(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("infra"))
    first = repo.commit({"prod/app/docker-compose.yml": COMPOSE, "README": "x"}, "first")
    second = repo.commit({"prod/app/.env": "TAG=2\n"}, "second: add env\n\nbody")
    git = _mirror(tmp_path, repo.url)

    assert git.fetch("main") == second
    assert git.resolve("main", "main") == second
    assert git.resolve(first[:8], "main") == first
    info = git.commit_info(second)
    assert (info.sha, info.message, info.author) == (second, "second: add env", "Test")
    assert datetime.fromisoformat(info.date).tzinfo is not None

    dest = tmp_path / "releases" / second
    assert git.export(second, "prod/app", dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == [".env", "docker-compose.yml"]
    assert (dest / "docker-compose.yml").read_text() == COMPOSE
    assert [p.name for p in dest.parent.iterdir()] == [second]  # no temp dir left behind
    # Idempotent: an existing release is never rewritten (a running stack may use it).
    (dest / ".env").write_text("TAG=local\n")
    git.export(second, "prod/app", dest)
    assert (dest / ".env").read_text() == "TAG=local\n"

    with pytest.raises(OperatorError, match="not a folder"):
        git.export(first, "prod/missing", tmp_path / "releases" / "other")


def test_refs_outside_the_branch_are_refused(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("refs"))
    sha = repo.commit({"a": "1"}, "one")
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")
    with pytest.raises(OperatorError, match="not in the history of main"):
        git.resolve("0" * 40, "main")
    with pytest.raises(OperatorError, match="neither the branch"):
        git.resolve("--upload-pack=evil", "main")
    with pytest.raises(OperatorError, match="couldn't find remote ref"):
        git.fetch("no-such-branch")
    assert git.resolve(sha, "main") == sha


def test_force_push_is_followed_and_the_old_commit_refused(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("forced"))
    base = repo.commit({"env/docker-compose.yml": COMPOSE}, "base")
    old = repo.commit({"env/docker-compose.yml": COMPOSE + "#old\n"}, "to be dropped")
    git = _mirror(tmp_path, repo.url)
    assert git.fetch("main") == old

    repo.force_push_reset(base)
    new = repo.commit({"env/.env": "TAG=3\n"}, "rewritten history")
    assert git.fetch("main") == new  # not a fast-forward: only a forced fetch gets here
    with pytest.raises(OperatorError, match="not in the history of main"):
        git.resolve(old, "main")
    assert git.resolve(base, "main") == base
    # The dropped commit's objects are still here, so the diff is exact, not "unknown".
    assert sorted(git.changed_paths(old, new) or []) == ["env/.env", "env/docker-compose.yml"]


def test_changed_paths(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("diffs"))
    one = repo.commit({"prod/a.yml": "a", "staging/b.yml": "b"}, "one")
    two = repo.commit({"staging/b.yml": "b2", "prod/a.yml": None, "prod/c.yml": "a"}, "two")
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")
    assert sorted(git.changed_paths(one, two) or []) == [
        "prod/a.yml",
        "prod/c.yml",
        "staging/b.yml",
    ]
    assert git.changed_paths(two, two) == []
    assert git.changed_paths(None, two) is None
    assert git.changed_paths("f" * 40, two) is None  # never fetched here: assume changed


def test_token_travels_only_in_the_environment(git_server: Any, tmp_path: Path) -> None:
    token = "tok-3e7b9c1d5a"
    repo = git_server.create_repo(_name("private"), token=token)
    sha = repo.commit({"docker-compose.yml": COMPOSE}, "private")
    cmdlines: list[bytes] = []

    def spy(group: ProcessGroup) -> None:
        with contextlib.suppress(OSError):  # git may be done already
            cmdlines.append(Path(f"/proc/{group.pgid}/cmdline").read_bytes())

    with pytest.raises(OperatorError) as refused:
        _mirror(tmp_path / "anon", repo.url).fetch("main")
    wrong = "wrong-token-0123"
    with pytest.raises(OperatorError) as bad:
        _mirror(tmp_path / "bad", repo.url, token=wrong).fetch("main")
    assert wrong not in str(bad.value)
    assert "ROLLHOOK_GIT_TOKEN" in str(refused.value)

    git = _mirror(tmp_path, repo.url, token=token, on_spawn=spy)
    assert git.fetch("main") == sha
    assert cmdlines
    assert not any(token.encode() in line for line in cmdlines)
    mirror_files = [p for p in (tmp_path / "mirror.git").rglob("*") if p.is_file()]
    assert not any(token.encode() in p.read_bytes() for p in mirror_files)


def test_ssh_key_is_a_private_file_for_one_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `ssh` on PATH records how git called it, then serves the repo locally."""
    bare = tmp_path / "remote.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "f").write_text("x")
    git = ["git", "-C", str(work), "-c", "user.name=T", "-c", "user.email=t@example.test"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "m"], check=True)
    subprocess.run([*git, "push", "-q", str(bare), "HEAD:main"], check=True)

    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "ssh-calls"
    fake = bindir / "ssh"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {record}\n'
        'while [ $# -gt 1 ]; do\n  if [ "$1" = -i ]; then stat -c %a "$2" >> '
        f'{record}; cat "$2" >> {record}; fi\n  shift\ndone\n'
        'exec sh -c "$1"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAfake\n-----END OPENSSH PRIVATE KEY-----"
    mirror = _mirror(tmp_path, f"ssh://git@git.invalid{bare}", ssh_key=key)
    assert len(mirror.fetch("main")) == 40
    calls = record.read_text()
    assert "IdentitiesOnly=yes" in calls
    assert "StrictHostKeyChecking=accept-new" in calls  # trust on first use by default
    assert "\n600\n" in calls
    assert key + "\n" in calls  # written with the trailing newline ssh insists on
    words = calls.split()
    key_path = words[words.index("-i") + 1]
    assert not Path(key_path).exists()


def test_pinned_known_hosts_are_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "ssh-calls"
    (bindir / "ssh").write_text(f'#!/bin/sh\necho "$@" >> {record}\nexit 255\n')
    (bindir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    pinned = tmp_path / "known_hosts"
    pinned.write_text("git.invalid ssh-ed25519 AAAA\n")
    mirror = _mirror(tmp_path, "ssh://git@git.invalid/x.git", ssh_key="k", known_hosts=pinned)
    with pytest.raises(Exception):  # noqa: B017 - the stand-in ssh always fails
        mirror.fetch("main")
    calls = record.read_text()
    assert "StrictHostKeyChecking=yes" in calls
    assert f"UserKnownHostsFile={pinned}" in calls


def test_a_token_is_never_sent_over_plain_http_to_another_host(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path, "http://git.example.test/acme/infra.git", token="t0ken")
    with pytest.raises(OperatorError, match="plain http"):
        mirror.fetch("main")


def test_a_redirect_never_carries_the_token(tmp_path: Path) -> None:
    """git sends an extraHeader on to wherever a redirect points: redirects are refused."""
    with Listener() as elsewhere:

        class Redirect(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", elsewhere.url + self.path)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/acme/infra.git"
            mirror = _mirror(tmp_path, url, token="s3cr3t-t0ken")
            with pytest.raises(Exception):  # noqa: B017 - the fetch must simply fail
                mirror.fetch("main")
        finally:
            server.shutdown()
            server.server_close()
        assert elsewhere.received == []


# -- a hostile infra repository ---------------------------------------------------------


def _crafted_commit(repo: Any, entries: list[tuple[str, str, bytes]], folder: str) -> str:
    """Push a commit whose tree ``folder`` holds exactly ``entries`` (mode, name, content).

    Built with plumbing, object by object: a tree entry name may then hold '/', which no
    porcelain command would write and which `git fetch` without object checks accepts.
    """
    work = repo.work
    env = {**git_env(), "GIT_AUTHOR_NAME": "Mallory", "GIT_AUTHOR_EMAIL": "m@example.test"}

    def store(kind: str, data: bytes) -> str:
        argv = ["git", "-C", str(work), "hash-object", "-t", kind, "-w", "--literally", "--stdin"]
        result = subprocess.run(argv, input=data, capture_output=True, env=env, check=True)
        return result.stdout.decode().strip()

    def tree(items: list[tuple[str, str, str]]) -> str:
        data = b"".join(f"{m} {n}".encode() + b"\0" + bytes.fromhex(o) for m, n, o in items)
        return store("tree", data)

    inner = tree([(mode, name, store("blob", content)) for mode, name, content in entries])
    git = ["git", "-C", str(work)]
    commit = subprocess.run(
        [*git, "commit-tree", "-m", "crafted", tree([("40000", folder, inner)])],
        capture_output=True,
        env=env,
        check=True,
    ).stdout.decode()
    push = [*git, "push", "-q", "-f", "origin", f"{commit.strip()}:refs/heads/main"]
    subprocess.run(push, env=env, check=True)
    return commit.strip()


def _exploit(depth: int) -> list[tuple[str, str, bytes]]:
    """The review's chain: ``d1 -> .``, a link named through d1 pointing ``depth`` levels
    up (lexically inside: its name is deeper than where it lands), then a file through it."""
    return [
        ("120000", "d1", b"."),
        ("120000", "d1/d1/d2/l1", b"../" * depth + b"outside"),
        ("100644", "d2/l1/x", b"written outside the release\n"),
    ]


def test_fetch_refuses_a_tree_entry_holding_a_slash(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("crafted"))
    _crafted_commit(repo, _exploit(3), "app")
    git = _mirror(tmp_path, repo.url)
    with pytest.raises(OperatorError, match=r"malformed object.*fullPathname"):
        git.fetch("main")
    assert not (tmp_path / "mirror.git" / "refs" / "heads" / "main").exists()


def test_export_never_writes_through_a_link(
    git_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror fetched without object checks (before they existed) still holds the objects:
    the export itself refuses the member whose path passes through the link ``d1``, on a
    Python without tarfile's extraction filters (Debian 12's 3.11.2) too."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    repo = git_server.create_repo(_name("chain"))
    # The release folder's temp dir is tmp/releases/.<sha>.xyz: three levels up is tmp.
    sha = _crafted_commit(repo, _exploit(3), "app")
    outside = tmp_path / "outside"
    outside.mkdir()
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], env=git_env(), check=True)
    fetch = ["git", "-C", str(mirror), "fetch", "-q", str(repo.bare), "+main:refs/heads/main"]
    subprocess.run(fetch, env=git_env(), check=True)

    dest = tmp_path / "releases" / sha
    with pytest.raises(OperatorError, match="d1/d1/d2/l1 would be written through the link d1"):
        _mirror(tmp_path, repo.url).export(sha, "app", dest)
    assert list(outside.iterdir()) == []
    assert list(dest.parent.iterdir()) == []  # nothing half-written left behind


def test_export_is_bounded_in_files_and_bytes(
    git_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_server.create_repo(_name("bounds"))
    sha = repo.commit({f"app/f{n}": "x" * 100 for n in range(5)}, "five files")
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")
    releases = tmp_path / "releases"

    monkeypatch.setattr(gitsync, "MAX_EXPORT_FILES", 4)
    with pytest.raises(OperatorError, match=r"more than 4 files.*bound on files"):
        git.export(sha, "app", releases / "a")
    monkeypatch.setattr(gitsync, "MAX_EXPORT_FILES", 5)
    monkeypatch.setattr(gitsync, "MAX_EXPORT_BYTES", 499)
    with pytest.raises(OperatorError, match=r"more than 499 bytes.*bound on bytes"):
        git.export(sha, "app", releases / "b")
    assert list(releases.iterdir()) == []
    monkeypatch.setattr(gitsync, "MAX_EXPORT_BYTES", 500)
    assert len(list(git.export(sha, "app", releases / "c").iterdir())) == 5


def test_export_writes_the_committed_bytes_whatever_the_config_says(
    git_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user config (a filter driver, as git-lfs installs), no attribute in the repo
    (ident, eol, export-ignore, export-subst) changes what is written."""
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "filter-ran"
    (home / ".gitconfig").write_text(
        "[core]\n\tattributesFile = ~/.gitattributes\n"
        f'[filter "evil"]\n\tsmudge = "touch {marker}; sed s/compose/pwned/"\n'
    )
    (home / ".gitattributes").write_text("* filter=evil\n")
    monkeypatch.setenv("HOME", str(home))
    text = "$Id$\nservices: {}  # compose $Format:%H$\n"
    repo = git_server.create_repo(_name("attributes"))
    sha = repo.commit(
        {
            ".gitattributes": "* ident eol=crlf export-subst\nsecret.env export-ignore\n",
            "docker-compose.yml": text,
            "secret.env": "A=1\n",
        },
        "attributes",
    )
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")

    dest = git.export(sha, ".", tmp_path / "releases" / sha)  # the default path: the root
    assert (dest / "docker-compose.yml").read_bytes() == text.encode()
    assert (dest / "secret.env").read_text() == "A=1\n"
    assert not marker.exists()


def test_the_repository_root_is_exported(git_server: Any, tmp_path: Path) -> None:
    """`path: "."` is the default: the root of the commit is a folder like any other."""
    repo = git_server.create_repo(_name("root"))
    sha = repo.commit({"docker-compose.yml": COMPOSE, "conf/app.ini": "a=1\n"}, "root")
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")
    for path in (".", ""):
        dest = git.export(sha, path, tmp_path / f"releases-{path or 'empty'}" / sha)
        assert (dest / "docker-compose.yml").read_text() == COMPOSE
        assert (dest / "conf" / "app.ini").read_text() == "a=1\n"


def test_commits_since_lists_at_most_the_newest_limit(git_server: Any, tmp_path: Path) -> None:
    repo = git_server.create_repo(_name("range"))
    base = repo.commit({"prod/a.yml": "0"}, "base")
    made = [repo.commit({"prod/a.yml": str(n)}, f"change {n}") for n in range(1, 6)]
    git = _mirror(tmp_path, repo.url)
    git.fetch("main")
    assert git.commits_since(base, made[-1]) == made[::-1]
    assert git.commits_since(base, made[-1], limit=3) == made[:-4:-1]
    assert git.commits_since(None, made[-1], limit=3) == []
