"""The infra repository: a bare mirror per target, fetched with force, exported by commit.

Only plain ``git`` processes (through :mod:`workers.procs`) touch the mirror: they get
deadlines and process groups, and a long-running worker keeps no repository objects.
Credentials never reach argv, the remote URL, the mirror's config or a message: the token
travels as an HTTP header in git's environment-only config, the SSH key as a 0600 file that
lives for one command.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from workers import archive, procs
from workers.errors import DeployError, InfrastructureError, OperatorError

# What one export may write: a hostile infra repo must not fill the disk.
MAX_EXPORT_FILES = 20_000  # files, folders and links
MAX_EXPORT_BYTES = 512 * 1024 * 1024  # the files' content
_PLAIN_ATTRIBUTES = (
    "* -filter -ident -text -eol -working-tree-encoding -export-subst -export-ignore\n"
)
_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_AUTH = re.compile(
    r"could not read (username|password)|authentication failed|permission denied \(publickey",
    re.IGNORECASE,
)
# git's words for "your repo, branch or credentials are wrong", as opposed to "the network".
# A push that lost the race: someone pushed first (not an error of ours to report).
_REJECTED = re.compile(r"\[rejected\]|fetch first|non-fast-forward|stale info|cannot lock ref")
_OPERATOR = re.compile(
    r"couldn't find remote ref|repository .* not found|not found|authentication failed|"
    r"could not read (username|password)|permission denied|does not appear to be a git "
    r"repository|invalid username or password|access denied|403",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    message: str  # first line
    author: str
    date: str  # authored, ISO 8601 with the author's offset (JSON-ready for the record)


def scrub(text: str, secrets: list[str]) -> str:
    """Remove every secret (and any user:password@ in URLs) from a message."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO.sub("***@", text)


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class GitRepo:
    def __init__(
        self,
        url: str,
        mirror_dir: Path,
        *,
        token: str | None = None,
        ssh_key: str | None = None,
        known_hosts: Path | None = None,
        timeout: float = 120.0,
        on_spawn: Callable[[procs.ProcessGroup], None] | None = None,
    ) -> None:
        self.url, self.mirror_dir, self.timeout, self.on_spawn = url, mirror_dir, timeout, on_spawn
        self._token, self._ssh_key, self._known_hosts = token, ssh_key, known_hosts
        self._secrets = [token or "", ssh_key or ""]
        if token:
            # "user:token" for servers that want a real user name; GitHub/Gitea take any.
            user, _, password = token.rpartition(":")
            pair = f"{user or 'x-access-token'}:{password}".encode()
            self._header = f"Authorization: Basic {base64.b64encode(pair).decode()}"
            self._secrets.append(self._header.split()[-1])

    # -- verbs ------------------------------------------------------------------------

    def fetch(self, branch: str) -> str:
        """Bring the mirror's copy of ``branch`` to the remote's (force-pushes included)."""
        parts = urlsplit(self.url)
        if self._token and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise OperatorError(
                f"refusing to send ROLLHOOK_GIT_TOKEN over plain http to {parts.hostname}; "
                "use https"
            )
        if not (self.mirror_dir / "HEAD").exists():
            self.mirror_dir.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "--quiet", ".")
        refspec = f"+refs/heads/{branch}:refs/heads/{branch}"
        self._git("fetch", "--quiet", "--no-tags", "--force", self.url, refspec, remote=True)
        return self._git("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")

    def resolve(self, ref: str, branch: str) -> str:
        """The full sha of ``ref`` (the branch name, or a full or short sha in its history)."""
        head = f"refs/heads/{branch}"
        if ref in {branch, head}:
            return self._git("rev-parse", "--verify", f"{head}^{{commit}}")
        if not _SHA.match(ref):
            raise OperatorError(f"ref {ref!r} is neither the branch {branch!r} nor a commit sha")
        sha = self._ask("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if not sha or self._ask("merge-base", "--is-ancestor", sha, head) is None:
            raise OperatorError(f"commit {ref} is not in the history of {branch}")
        return sha

    def commit_info(self, sha: str) -> CommitInfo:
        out = self._git("log", "-1", "--format=%H%x00%s%x00%an%x00%aI", _sha(sha), "--")
        full, message, author, date = out.split("\x00")
        return CommitInfo(full, message, author, date)

    def export(self, sha: str, subdir: str, dest: Path) -> Path:
        """Write the files of ``subdir`` at ``sha`` to ``dest``, all at once or not at all.

        The bytes written are the committed bytes: a tree (not a commit) is archived, so
        ``export-subst`` has nothing to expand, and neither the user's nor the system's git
        configuration (filters, LFS smudge) nor any attribute applies.
        """
        if dest.exists():
            return dest
        what = f"{subdir} at {sha[:12]}"
        root = subdir in {"", "."}
        tree = f"{_sha(sha)}^{{tree}}" if root else f"{_sha(sha)}:{PurePosixPath(subdir)}"
        if self._ask("cat-file", "-t", tree) != "tree":
            raise OperatorError(f"{subdir} is not a folder at commit {sha[:12]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        home = Path(tempfile.mkdtemp(prefix=f".{dest.name}.home.", dir=dest.parent))
        tar_path = tmp.with_name(f"{tmp.name}.tar")
        try:
            self._check_bounds(tree, home, what)
            self._neutralise_attributes()
            self._plain(home, "archive", "--format=tar", f"--output={tar_path}", tree)
            with tarfile.open(tar_path) as tar:
                archive.extract(
                    tar, tmp, what, max_files=MAX_EXPORT_FILES, max_bytes=MAX_EXPORT_BYTES
                )
            tmp.chmod(0o755)
            try:
                tmp.rename(dest)
            except OSError:
                if not dest.exists():
                    raise
        except (OSError, tarfile.TarError) as exc:
            raise InfrastructureError(f"cannot export {what}: {exc}") from exc
        finally:
            tar_path.unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
        return dest

    def commits(self, old: str, new: str, limit: int = 50) -> list[CommitInfo]:
        """The commits after ``old`` up to ``new``, newest first (at most ``limit``)."""
        spec = f"{_sha(old)}..{_sha(new)}"
        out = self._git(
            "log", f"--max-count={limit}", "--format=%H%x00%s%x00%an%x00%aI", spec, "--"
        )
        found = []
        for line in out.splitlines():
            full, message, author, date = line.split("\x00")
            found.append(CommitInfo(sha=full, message=message, author=author, date=date))
        return found

    def changed_paths(self, old: str | None, new: str) -> list[str] | None:
        """Files changed between two commits; None when ``old`` is unknown here."""
        if (
            not old
            or not _SHA.match(old)
            or self._ask("cat-file", "-e", f"{old}^{{commit}}") is None
        ):
            return None
        # --no-renames: a moved file counts under both its old and its new path.
        names = ["diff", "--name-only", "--no-renames", "-z", old, _sha(new), "--"]
        out = self._git(*names, strip=False)
        return [path for path in out.split("\x00") if path]

    def commits_since(self, old: str | None, new: str, limit: int | None = None) -> list[str]:
        """The commits ``new`` brings that ``old`` lacks (the newest ``limit`` of them at
        most); empty when ``old`` is unknown here."""
        if (
            not old
            or not _SHA.match(old)
            or self._ask("cat-file", "-e", f"{old}^{{commit}}") is None
        ):
            return []
        most = [f"--max-count={limit}"] if limit is not None else []
        return self._git("rev-list", *most, f"{old}..{_sha(new)}", "--").split()

    def heads(self, branches: Iterable[str]) -> dict[str, str]:
        """The remote's head commit of each branch, all in one ``git ls-remote``.

        A branch the remote does not have is absent from the answer. Nothing is fetched and
        no mirror is needed, so a poller may ask before any deployment fetched (with an SSH
        key and no pinned known_hosts, the mirror folder is made to remember the host key).
        """
        wanted = list(dict.fromkeys(branches))
        if not wanted:
            return {}
        self._refuse_token_over_plain_http()
        if self._ssh_key and self._known_hosts is None:
            self.mirror_dir.mkdir(parents=True, exist_ok=True)  # trust on first use is kept there
        args = ("ls-remote", "--heads", self.url, *(f"refs/heads/{b}" for b in wanted))
        with self._environment(remote=True) as env:
            # Run outside any repository: ls-remote needs none, and must read no repo config.
            result = procs.run(
                ["git", *args], env=env, timeout=self.timeout, cwd=Path("/"), on_spawn=self.on_spawn
            )
        if result.returncode != 0:
            raise self._remote_failure(args, result)
        found = {}
        for line in result.stdout.decode(errors="replace").splitlines():
            sha, _, ref = line.partition("\t")
            branch = ref.removeprefix("refs/heads/")
            if branch in wanted and _SHA.match(sha):
                found[branch] = sha
        return found

    # -- plumbing ---------------------------------------------------------------------

    def change_file(
        self,
        branch: str,
        path: str,
        rewrite: Callable[[str | None], str | None],
        message: str,
        *,
        attempts: int = 3,
    ) -> str | None:
        """Commit ``rewrite`` of the file at ``path`` on top of ``branch`` and push it, as
        ``rollhook <rollhook@localhost>``, never forcing. The work happens in a scratch
        clone that shares the mirror's objects (the mirror itself is never written). A
        push rejected because someone pushed first is fetched and re-applied on the new
        head, up to ``attempts`` times. Returns the new commit's sha, or None when the
        branch already says what ``rewrite`` wants (``rewrite`` returned None or the same)."""
        self.fetch(branch)
        with tempfile.TemporaryDirectory(prefix="rollhook-write-back-") as tmp:
            work = Path(tmp) / "repo"
            self._plain(
                Path(tmp), "clone", "--quiet", "--shared", "--no-tags", "--no-checkout",
                str(self.mirror_dir), str(work),
            )  # fmt: skip
            scratch = GitRepo(
                self.url, work, token=self._token, ssh_key=self._ssh_key,
                known_hosts=self._known_hosts, timeout=self.timeout, on_spawn=self.on_spawn,
            )  # fmt: skip
            for _ in range(attempts):
                head = scratch.fetch(branch)
                scratch._git("checkout", "--quiet", "--force", "--detach", head)
                target = work / path
                if any(p.is_symlink() for p in (target, *target.parents) if work in p.parents):
                    raise OperatorError(f"write-back: {path} is a symlink in the repository")
                before = target.read_text() if target.is_file() else None
                after = rewrite(before)
                if after is None or after == before:
                    return None
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(after)
                scratch._git("add", "--", path)
                scratch._git(
                    "-c", "user.name=rollhook", "-c", "user.email=rollhook@localhost",
                    "-c", "commit.gpgsign=false",
                    "commit", "--quiet", "--no-verify", "-m", message,
                )  # fmt: skip
                sha = scratch._git("rev-parse", "HEAD")
                pushed = scratch._run(
                    ("push", "--quiet", self.url, f"{sha}:refs/heads/{branch}"), remote=True
                )
                if pushed.returncode == 0:
                    return sha
                said = pushed.stderr.decode(errors="replace")
                if not _REJECTED.search(said):
                    raise scratch._remote_failure(("push",), pushed)
            raise InfrastructureError(
                f"write-back: the push to {branch} was rejected {attempts} times "
                "(others keep pushing first)"
            )

    def _check_bounds(self, tree: str, home: Path, what: str) -> None:
        """Refuse a tree over the export's bounds before git archive writes anything."""
        # One entry per line of at most 21 bytes (a size or "-", then NUL): output beyond
        # this cap means more entries than the bound, whatever their names' lengths.
        cap = (MAX_EXPORT_FILES + 1) * 21
        try:
            out = self._plain(
                home, "ls-tree", "-r", "-t", "-z", "--format=%(objectsize)", tree, stdout_cap=cap
            )
        except procs.OutputTooLarge as exc:
            raise OperatorError(archive.too_many_files(what, MAX_EXPORT_FILES)) from exc
        sizes = [size for size in out.stdout.split(b"\x00") if size]
        if len(sizes) > MAX_EXPORT_FILES:
            raise OperatorError(archive.too_many_files(what, MAX_EXPORT_FILES))
        if sum(int(size) for size in sizes if size.isdigit()) > MAX_EXPORT_BYTES:
            raise OperatorError(archive.too_many_bytes(what, MAX_EXPORT_BYTES))

    def _neutralise_attributes(self) -> None:
        """No attribute of the repository's own .gitattributes changes what is exported.

        The mirror's info/attributes outranks every .gitattributes in the tree: no
        filter, no ident, no line-ending or encoding conversion, nothing left out.
        """
        info = self.mirror_dir / "info"
        info.mkdir(exist_ok=True)
        (info / "attributes").write_text(_PLAIN_ATTRIBUTES)

    def _plain(self, home: Path, *args: str, stdout_cap: int = procs.STDOUT_CAP) -> procs.Completed:
        """Run git in the mirror without any configuration but the mirror's own."""
        result = procs.run(
            ["git", "-C", str(self.mirror_dir), "-c", "core.attributesFile=/dev/null", *args],
            env=procs.child_env(
                HOME=str(home),
                XDG_CONFIG_HOME=str(home),
                GIT_CONFIG_NOSYSTEM="1",
                GIT_CONFIG_GLOBAL=os.devnull,
                GIT_ATTR_NOSYSTEM="1",
                GIT_TERMINAL_PROMPT="0",
            ),
            timeout=self.timeout,
            on_spawn=self.on_spawn,
            stdout_cap=stdout_cap,
        )
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise InfrastructureError(f"git {args[0]}: {lines[-1] if lines else 'failed'}")
        return result

    def _git(self, *args: str, remote: bool = False, strip: bool = True) -> str:
        """Run git in the mirror; its output, or the project's error (scrubbed)."""
        result = self._run(args, remote)
        if result.returncode == 0:
            stdout = result.stdout.decode(errors="replace")
            return stdout.strip() if strip else stdout
        lines = scrub(result.stderr.decode(errors="replace").strip(), self._secrets).splitlines()
        message = lines[-1] if lines else f"exit code {result.returncode}"
        what = f"git {args[0]} {scrub(self.url, self._secrets) if remote else ''}".strip()
        if remote and any("fsck error" in line for line in lines):
            bad = next((line for line in lines if line.startswith("error: object")), message)
            raise OperatorError(
                f"{what}: refused a malformed object ({bad.removeprefix('error: ')})"
            )
        if remote and _AUTH.search(message):
            message += " (check ROLLHOOK_GIT_TOKEN or ROLLHOOK_GIT_SSH_KEY)"
        if remote and _OPERATOR.search(message):
            raise OperatorError(f"{what}: {message}")
        raise InfrastructureError(f"{what}: {message}")

    def _ask(self, *args: str) -> str | None:
        """A local question whose failure means "no": its output, or None."""
        result = self._run(args, remote=False)
        return result.stdout.decode(errors="replace").strip() if result.returncode == 0 else None

    def _run(self, args: tuple[str, ...], remote: bool) -> procs.Completed:
        with self._environment(remote) as env:
            return procs.run(
                ["git", "-C", str(self.mirror_dir), *args],
                env=env,
                timeout=self.timeout,
                on_spawn=self.on_spawn,
            )

    def _refuse_token_over_plain_http(self) -> None:
        parts = urlsplit(self.url)
        if self._token and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise OperatorError(
                f"refusing to send ROLLHOOK_GIT_TOKEN over plain http to {parts.hostname}; "
                "use https"
            )

    def _remote_failure(self, args: tuple[str, ...], result: procs.Completed) -> DeployError:
        """The project's error for a failed remote command, its message scrubbed."""
        message = scrub(result.stderr.decode(errors="replace").strip(), self._secrets)
        message = message.splitlines()[-1] if message else f"exit code {result.returncode}"
        what = f"git {args[0]} {scrub(self.url, self._secrets)}"
        if _AUTH.search(message):
            message += " (check ROLLHOOK_GIT_TOKEN or ROLLHOOK_GIT_SSH_KEY)"
        if _OPERATOR.search(message):
            return OperatorError(f"{what}: {message}")
        return InfrastructureError(f"{what}: {message}")

    @contextlib.contextmanager
    def _environment(self, remote: bool) -> Iterator[dict[str, str]]:
        env = procs.child_env(GIT_TERMINAL_PROMPT="0")
        parts = urlsplit(self.url)
        config: list[tuple[str, str]] = []
        if remote:
            # Every fetched object is checked: a crafted tree (an entry name holding '/',
            # '..' or '.git') is refused before it reaches the mirror.
            config += [("fetch.fsckObjects", "true"), ("transfer.fsckObjects", "true")]
        if remote and self._token and parts.scheme in {"http", "https"}:
            # Config from the environment only (never argv, never the mirror's config),
            # scoped to the repository's origin. Redirects are not followed at all: git
            # sends an extraHeader on to wherever a redirect points.
            origin = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
            config += [
                (f"http.{origin}/.extraHeader", self._header),
                ("http.followRedirects", "false"),
            ]
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for n, (name, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = name, value
        if not (remote and self._ssh_key):
            yield env
            return
        keydir = Path(tempfile.mkdtemp(prefix="rollhook-ssh-"))
        try:
            key = keydir / "id"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self._ssh_key.strip() + "\n")  # ssh rejects a key without it
            # With ROLLHOOK_GIT_KNOWN_HOSTS only its keys are trusted; without it, trust on
            # first use, remembered per mirror (a changed host key is then refused).
            if self._known_hosts is not None:
                known, checking = self._known_hosts, "yes"
            else:
                known, checking = self.mirror_dir / "known_hosts", "accept-new"
            options = [
                "IdentitiesOnly=yes",
                "BatchMode=yes",
                f"StrictHostKeyChecking={checking}",
                f"UserKnownHostsFile={known}",
                "ConnectTimeout=30",
            ]
            ssh = ["ssh", "-i", str(key), *(arg for o in options for arg in ("-o", o))]
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
            yield env
        finally:
            shutil.rmtree(keydir, ignore_errors=True)


def _sha(value: str) -> str:
    """A commit id we were given; checked so that it can never be read as an option."""
    if not _SHA.match(value):
        raise OperatorError(f"{value!r} is not a commit sha")
    return value
