"""Signed commits: every commit about to be deployed carries a signature from an allowed key.

git checks the signatures itself (``git verify-commit``): SSH signatures against the
operator's allowed signers file (``gpg.ssh.allowedSignersFile``, checked by ssh-keygen
with git's namespace), GnuPG ones against a GNUPGHOME built for the check from the
configured keyring alone. Neither the user's nor the system's git configuration, nor the
user's GnuPG home (its keys and trust would count), takes part: git runs with an empty
home of its own. A key imported into that home is allowed whatever its owner trust: the
keyring file is the operator's list of allowed keys.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rollhook.targets import CommitVerification
from workers import procs
from workers.errors import InfrastructureError, OperatorError

# ``range: true`` checks every commit since the deployed one, one ``git verify-commit``
# each: a long-lived branch merged at once could mean thousands. Past this many the
# deployment is refused, never checked in part.
MAX_RANGE_COMMITS = 200


class UnsignedCommit(OperatorError):
    """A commit is unsigned, or not signed by an allowed key: it is never deployed."""


class RangeTooLong(UnsignedCommit):
    """``range: true`` and more commits since the deployed one than are checked."""


def range_to_check(since: str | None, commit: str, commits: Sequence[str]) -> list[str]:
    """``commits`` (``commit``'s since ``since``, as the mirror listed them, up to one more
    than :data:`MAX_RANGE_COMMITS`) when that many may be checked; else RangeTooLong."""
    if len(commits) > MAX_RANGE_COMMITS:
        raise RangeTooLong(
            f"verify.commits.range: more than {MAX_RANGE_COMMITS} commits from "
            f"{(since or '?')[:7]} to {commit[:7]}, and rollhook checks at most "
            f"{MAX_RANGE_COMMITS}: deploy a commit in between first "
            "(rollhook deploy NAME --ref SHA), or turn range off for this change; "
            "nothing was deployed"
        )
    return list(commits)


class CommitSignatures:
    """The signature check of one target's mirror, by its ``verify.commits`` rule."""

    def __init__(
        self,
        rule: CommitVerification,
        mirror_dir: Path,
        *,
        timeout: float = 60.0,
        on_spawn: Callable[[procs.ProcessGroup], None] | None = None,
    ) -> None:
        self.rule, self.mirror_dir, self.timeout, self.on_spawn = (
            rule,
            mirror_dir,
            timeout,
            on_spawn,
        )

    def verify(self, commits: Sequence[str]) -> None:
        """Raise :class:`UnsignedCommit` for the first commit without an allowed signature."""
        with _checking(self.rule, self.timeout, self.on_spawn) as (env, config):
            for sha in dict.fromkeys(commits):
                argv = ["git", "-C", str(self.mirror_dir), *config, "verify-commit", "--raw", sha]
                result = procs.run(argv, env=env, timeout=self.timeout, on_spawn=self.on_spawn)
                if result.returncode != 0:
                    raise UnsignedCommit(
                        f"commit {sha[:7]} is not signed by an allowed key ({self._why(sha, env)})"
                    )

    # -- plumbing ---------------------------------------------------------------------

    def _why(self, sha: str, env: dict[str, str]) -> str:
        argv = ["git", "-C", str(self.mirror_dir), "cat-file", "commit", sha]
        result = procs.run(argv, env=env, timeout=self.timeout, on_spawn=self.on_spawn)
        if result.returncode != 0:
            return "not in the mirror"
        headers = result.stdout.split(b"\n\n", 1)[0]
        if not any(line.startswith(b"gpgsig") for line in headers.split(b"\n")):
            return "it carries no signature"
        return (
            f"its signature is not from a key in verify.commits.{_kind(self.rule)}, "
            "or does not verify"
        )


@contextlib.contextmanager
def _checking(
    rule: CommitVerification,
    timeout: float,
    on_spawn: Callable[[procs.ProcessGroup], None] | None,
) -> Iterator[tuple[dict[str, str], list[str]]]:
    """git's environment and configuration for the check, in a home made for it."""
    keys = rule.keys
    if not os.access(keys, os.R_OK) or not keys.is_file():
        raise OperatorError(f"verify.commits.{_kind(rule)}: cannot read {keys} on this host")
    # Short, under /tmp: gpg's sockets live in its home and a socket path is capped.
    home = Path(tempfile.mkdtemp(prefix="rh-sig-"))
    gnupg = home / "g"
    gnupg.mkdir(mode=0o700)
    env = procs.child_env(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home),
        GNUPGHOME=str(gnupg),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    config = [
        "-c", "gpg.program=gpg",
        "-c", "gpg.ssh.program=ssh-keygen",
        # The keyring is the list of allowed keys: no web of trust on top of it.
        "-c", "gpg.minTrustLevel=undefined",
    ]  # fmt: skip
    try:
        if rule.allowed_signers is not None:
            config += ["-c", f"gpg.ssh.allowedSignersFile={rule.allowed_signers}"]
        else:
            argv = ["gpg", "--batch", "--quiet", "--no-tty", "--import", str(keys)]
            if procs.run(argv, env=env, timeout=timeout, on_spawn=on_spawn).returncode != 0:
                raise OperatorError(
                    f"verify.commits.gpg_keyring: {keys} holds no public key gpg can import"
                )
        yield env, config
    finally:
        if rule.gpg_keyring is not None and shutil.which("gpgconf"):
            # gpg may have started an agent for the home; it goes with the home.
            with contextlib.suppress(InfrastructureError):
                procs.run(["gpgconf", "--kill", "all"], env=env, timeout=10)
        shutil.rmtree(home, ignore_errors=True)


def _kind(rule: CommitVerification) -> str:
    return "allowed_signers" if rule.allowed_signers is not None else "gpg_keyring"


def key_problems(rule: CommitVerification) -> list[str]:
    """What check-config says about the configured keys on this host (empty when fine)."""
    kind, keys = _kind(rule), rule.keys
    if not keys.is_file():
        return [f"verify.commits.{kind}: {keys} does not exist on this host (or is not a file)"]
    if not os.access(keys, os.R_OK):
        return [f"verify.commits.{kind}: {keys} is not readable"]
    if rule.allowed_signers is not None:
        lines = [
            line.strip()
            for line in keys.read_text(errors="replace").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            return [f"verify.commits.{kind}: {keys} names no signer"]
        return []
    try:
        with _checking(rule, 30.0, None):
            pass
    except (OperatorError, InfrastructureError) as exc:
        return [str(exc)]
    return []
