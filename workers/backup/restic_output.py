"""Reading what restic 0.14 prints: JSON where it offers it, and the causes of failures.

restic (and the ssh it runs for SFTP, its lines prefixed "subprocess ssh: ") explain a
failure in text on stderr. :func:`failure` turns that into one line naming the cause,
as the project's errors: the operator's to fix (a wrong password, no repository, an SSH
key or host key refused) or the system's (unreachable, locked, anything else).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from workers.backup.remote_model import (
    RepositoryLocked,
    RepositoryMissing,
    RepositoryUnreachable,
    WrongPassword,
)
from workers.errors import DeployError, InfrastructureError, OperatorError

URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")
MAX_MESSAGE = 300
SSH = "subprocess ssh: "


class Failed(InfrastructureError):
    """restic failed without a known cause; ``problems``: the lines that say what it saw."""

    def __init__(self, message: str, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.problems = problems


# What restic (or ssh before it) says, lowercased, and what it means; the first match wins.
_CAUSES: tuple[tuple[tuple[str, ...], type[DeployError], str], ...] = (
    (
        ("wrong password or no key found",),
        WrongPassword,
        "wrong password (the password file is {password_file})",
    ),
    (
        ("resolving password failed", "empty password"),
        OperatorError,
        "cannot use the password file {password_file}: {last}",
    ),
    (("repository is already locked",), RepositoryLocked, "{locked}"),
    (
        ("host key verification failed", "remote host identification has changed"),
        OperatorError,
        "the SSH host key is not the known one",
    ),
    (
        ("permission denied (publickey", "permission denied, please try again"),
        OperatorError,
        "SSH refused the key (Permission denied)",
    ),
    (
        (
            "unable to open repository",
            "unable to start the sftp session",
            "connection refused",
            "no such host",
            "could not resolve hostname",
            "network is unreachable",
            "no route to host",
            "i/o timeout",
            "connection timed out",
            "connection reset",
        ),
        RepositoryUnreachable,
        "{reason}",
    ),
    # After the network causes: restic asks this about a server it could not reach, too.
    (
        ("is there a repository at the following location?",),
        RepositoryMissing,
        "no repository there (create it with init)",
    ),
)


def failure(head: str, stderr: str, password_file: str) -> DeployError:
    """The error restic's (already scrubbed) ``stderr`` describes, as ``head: cause``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    locked = next((ln for ln in lines if "already locked" in ln), last(lines))
    facts = {
        "password_file": password_file,
        "last": last(lines),
        "reason": reason(lines),
        "locked": locked.split(": ", 1)[-1],
    }
    lowered = stderr.lower()
    for needles, kind, message in _CAUSES:
        if any(needle in lowered for needle in needles):
            return kind(f"{head}: {message.format(**facts)}")
    return Failed(f"{head}: {facts['reason']}", tuple(problems(lines)))


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` without a password in a URL or any of ``secrets`` (4 characters or more)."""
    text = URL_PASSWORD.sub(r"\1:***@", text)
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def parse(stdout: bytes, display: str) -> Any:
    """restic's JSON output; None when it printed nothing (forget, when nothing matched)."""
    if not stdout.strip():
        return None
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise InfrastructureError(f"restic on {display}: unreadable JSON output") from exc


def summary(stdout: bytes) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("message_type") == "summary":
            return message
    return None


def last(lines: Sequence[str]) -> str:
    return lines[-1][:MAX_MESSAGE] if lines else "(no message)"


def reason(lines: Sequence[str]) -> str:
    """restic's "Fatal: ..." line (or its last one), after the last thing ssh said."""
    fatal = next((ln for ln in reversed(lines) if ln.startswith("Fatal:")), None)
    text = (fatal or last(lines)).removeprefix("Fatal: ")
    ssh = next((ln for ln in reversed(lines) if ln.startswith(SSH)), None)
    if ssh is not None:
        text = f"{ssh.removeprefix(SSH)}; {text}"
    return text[:MAX_MESSAGE]


# Lines of `restic check` that report progress or what is harmless, not a problem.
_NOISE = (
    "using temporary cache",
    "create exclusive lock",
    "load indexes",
    "check all packs",
    "check snapshots, trees and blobs",
    "read all data",
    "read group",
    "not referenced in any index",
    "additional files were found in the repo",
    "This is non-critical",
    "no errors were found",
)


def problems(lines: Sequence[str]) -> list[str]:
    kept = [ln for ln in lines if not ln.startswith("[") and not any(n in ln for n in _NOISE)]
    return [ln[:MAX_MESSAGE] for ln in kept[:20]]
