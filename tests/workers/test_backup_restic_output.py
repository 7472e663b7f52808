"""What restic 0.14 says when it fails, and what rollhook makes of it (pure, table-style).

The stderr texts are restic's own, captured from Debian's restic 0.14.0.
"""

from __future__ import annotations

import pytest

from workers.backup import restic_output
from workers.backup.remote_model import (
    RepositoryLocked,
    RepositoryMissing,
    RepositoryUnreachable,
    WrongPassword,
)
from workers.errors import DeployError, OperatorError

LOCAL_MISSING = """Fatal: unable to open config file: stat /srv/repo/config: no such file or directory
Is there a repository at the following location?
/srv/repo
"""  # noqa: E501
SFTP_MISSING = """Fatal: unable to open config file: Lstat: file does not exist
Is there a repository at the following location?
sftp:backup@nas:/rollhook
"""
REST_REFUSED = """Fatal: unable to open config file: client.Head: Head "http://u:***@127.0.0.1:1/repo/config": dial tcp 127.0.0.1:1: connect: connection refused
Is there a repository at the following location?
rest:http://u:***@127.0.0.1:1/repo/
"""  # noqa: E501
SFTP_REFUSED = """subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused
Fatal: unable to open repository at sftp:root@127.0.0.1:/r: unable to start the sftp session, error: EOF
"""  # noqa: E501
HOST_KEY = """subprocess ssh: @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
subprocess ssh: Host key verification failed.
Fatal: unable to open repository at sftp:root@127.0.0.1:/r: unable to start the sftp session, error: EOF
"""  # noqa: E501
LOCKED = """unable to create lock in backend: repository is already locked by PID 31667 on vm by root (UID 0, GID 0)
lock was created at 2026-12-02 10:56:54 (1.96s ago)
storage ID 2bbf63aa
the `unlock` command can be used to remove stale locks
"""  # noqa: E501
CHECK_ERRORS = """using temporary cache in /tmp/restic-check-cache-1
create exclusive lock for repository
load indexes
check all packs
pack 9edbfb2d: not referenced in any index
1 additional files were found in the repo, which likely contain duplicate data.
This is non-critical, you can run `restic prune` to correct this.
check snapshots, trees and blobs
error for tree 1aab9e48:
  decrypting blob 1aab9e48 failed: ciphertext verification failed
Pack ID does not match, want 56ef6049, got 7a56004a
Fatal: repository contains errors
"""


@pytest.mark.parametrize(
    ("stderr", "kind", "says"),
    [
        ("Fatal: wrong password or no key found\n", WrongPassword, "wrong password"),
        (
            "Resolving password failed: Fatal: /etc/pw does not exist\n",
            OperatorError,
            "cannot use the password file /etc/pw",
        ),
        (LOCAL_MISSING, RepositoryMissing, "no repository there"),
        (SFTP_MISSING, RepositoryMissing, "no repository there"),
        (REST_REFUSED, RepositoryUnreachable, "connection refused"),
        (SFTP_REFUSED, RepositoryUnreachable, "ssh: connect to host 127.0.0.1 port 1"),
        (HOST_KEY, OperatorError, "SSH host key is not the known one"),
        (LOCKED, RepositoryLocked, "already locked by PID 31667 on vm"),
        (CHECK_ERRORS, restic_output.Failed, "repository contains errors"),
        ("", restic_output.Failed, "(no message)"),
    ],
)
def test_failures_are_told_apart(stderr: str, kind: type[DeployError], says: str) -> None:
    error = restic_output.failure("restic could not list /r", stderr, "/etc/pw")
    assert type(error) is kind
    assert str(error).startswith("restic could not list /r: ")
    assert says in str(error)
    assert "\n" not in str(error)


def test_the_problems_check_found_are_its_error_lines() -> None:
    error = restic_output.failure("restic could not check /r", CHECK_ERRORS, "/etc/pw")
    assert isinstance(error, restic_output.Failed)
    assert error.problems == (
        "error for tree 1aab9e48:",
        "decrypting blob 1aab9e48 failed: ciphertext verification failed",
        "Pack ID does not match, want 56ef6049, got 7a56004a",
        "Fatal: repository contains errors",
    )


@pytest.mark.parametrize(
    ("text", "secrets", "scrubbed"),
    [
        ("rest:https://user:hunter22@host/r", [], "rest:https://user:***@host/r"),
        ("s3:https://s3.example.com/bucket", [], "s3:https://s3.example.com/bucket"),
        ("key AKIAsecretvalue failed", ["AKIAsecretvalue"], "key *** failed"),
        ("a abc b", ["abc"], "a abc b"),  # too short to be a secret, too common to hide
        ("pw: longsecret", ["secret", "longsecret"], "pw: ***"),
    ],
)
def test_secrets_are_scrubbed(text: str, secrets: list[str], scrubbed: str) -> None:
    assert restic_output.scrub(text, secrets) == scrubbed


def test_the_summary_is_the_last_summary_line() -> None:
    stdout = (
        b'{"message_type":"status","percent_done":0.5}\n'
        b"not json\n"
        b'{"message_type":"summary","data_added":42,"snapshot_id":"6f8f4e54"}\n'
    )
    assert restic_output.summary(stdout) == {
        "message_type": "summary",
        "data_added": 42,
        "snapshot_id": "6f8f4e54",
    }
    assert restic_output.summary(b'{"message_type":"status"}\n') is None
