"""Child processes (git, docker compose) in their own process group, with a deadline.

A worker can die mid-step (SIGKILL, OOM, a host reboot). Whatever it started must not
keep running unseen, so every child leads a new process group that the caller journals
through ``on_spawn``; recovery later hands that record to :func:`end_group`, which ends
the group only if it is provably the same one (same boot, same leader start time), never
a stranger that happens to have reused the number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from workers.errors import InfrastructureError, StepTimeout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDOUT_CAP = 32 * 1024 * 1024  # compose's JSON config of a large stack stays well under this
STDERR_CAP = 64 * 1024  # the tail is what explains a failure
GRACE = 5.0  # between SIGTERM and SIGKILL


class OutputTooLarge(InfrastructureError):
    """A child wrote more to stdout than its caller allowed; it was ended."""


@dataclass(frozen=True)
class ProcessGroup:
    """What recovery needs to find a child's process group again, JSON-friendly."""

    pgid: int
    leader_start: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    boot_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessGroup:
        return cls(int(data["pgid"]), int(data["leader_start"]), str(data["boot_id"]))


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes  # the last STDERR_CAP bytes


def child_env(**extra: str | None) -> dict[str, str]:
    """A minimal environment: PATH, HOME, a C locale (stable messages), plus ``extra``."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME") or "/root",
        "LC_ALL": "C",
    }
    env.update({key: value for key, value in extra.items() if value is not None})
    return env


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[int, int] | None:
    """(process group, start time) of a process, or None."""
    fields = _fields(pid)
    return (int(fields[2]), int(fields[19])) if fields else None


def _state(pid: int) -> str | None:
    fields = _fields(pid)
    return fields[0] if fields else None


def _members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] == pgid:
            pids.append(int(entry.name))
    return pids


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_led_by(pid: int) -> ProcessGroup | None:
    """The record of the process group that ``pid`` leads, or None if it leads none now."""
    stat = _stat(pid)
    if stat is None or stat[0] != pid:
        return None
    return ProcessGroup(pid, stat[1], _boot_id())


def is_ours(group: ProcessGroup) -> bool:
    """Whether processes of this recorded group are still alive (and it is really the same).

    Linux never hands out a number still in use as a process group id, so while any member
    lives the number is ours; a leader alive with another start time is a reused pid.
    """
    if group.boot_id != _boot_id():
        return False
    leader = _stat(group.pgid)
    if leader is not None and leader[1] != group.leader_start:
        return False
    return _alive(group.pgid)


def end_group(record: ProcessGroup | Mapping[str, Any], *, grace: float = GRACE) -> bool:
    """End a recorded process group (SIGTERM, then SIGKILL after ``grace``); True if it ran.

    ``record`` may be the journal's JSON form (``to_dict()``, extra keys ignored).
    """
    group = record if isinstance(record, ProcessGroup) else ProcessGroup.from_dict(record)
    if not is_ours(group):
        return False
    _signal_group(group.pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(group.pgid):
        time.sleep(0.05)
    if _alive(group.pgid):  # live members keep the number reserved: still the same group
        _signal_group(group.pgid, signal.SIGKILL)
    return True


class _Reader(threading.Thread):
    """Drains a pipe so the child never blocks on it; keeps the head or the tail."""

    def __init__(self, pipe: IO[bytes], cap: int, *, keep_tail: bool) -> None:
        super().__init__(daemon=True)
        self.pipe, self.cap, self.keep_tail = pipe, cap, keep_tail
        self.data = bytearray()
        self.overflow = False

    def run(self) -> None:
        while chunk := self.pipe.read(65536):
            self.data += chunk
            if len(self.data) > self.cap:
                self.overflow = True
                self.data = self.data[-self.cap :] if self.keep_tail else self.data[: self.cap]
        self.pipe.close()


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    on_spawn: Callable[[ProcessGroup], None] | None = None,
    stdout_cap: int = STDOUT_CAP,
) -> Completed:
    """Run ``argv`` (no shell) in a new process group; end the group at ``timeout``.

    Raises StepTimeout once the group has been ended, InfrastructureError when the program
    cannot be started (OutputTooLarge when its output exceeds ``stdout_cap``). A non-zero
    exit is returned, not raised: only the caller knows what it means.
    """
    argv = list(argv)
    try:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise InfrastructureError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    out = _Reader(proc.stdout, stdout_cap, keep_tail=False)  # type: ignore[arg-type]
    err = _Reader(proc.stderr, STDERR_CAP, keep_tail=True)  # type: ignore[arg-type]
    out.start()
    err.start()
    finished = False
    try:
        if on_spawn is not None:
            on_spawn(group_led_by(proc.pid) or ProcessGroup(proc.pid, 0, _boot_id()))
        finished = _wait_unreaped(proc.pid, timeout)
        if finished:
            # The leader stays a zombie until reaped, so its group id cannot have been
            # reused: end whatever it left running in its group, then reap it.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        _end_child(proc)  # past the deadline, or interrupted
        out.join(GRACE)
        err.join(GRACE)
    if not finished:
        raise StepTimeout(f"{Path(argv[0]).name} ran past its {timeout:g}s deadline")
    if out.overflow:
        raise OutputTooLarge(f"{Path(argv[0]).name} wrote more than {stdout_cap} bytes")
    return Completed(argv, proc.returncode, bytes(out.data), bytes(err.data))


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait for the child to exit without reaping it; False at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def _alive(pgid: int) -> bool:
    return any(_state(pid) not in {None, "Z"} for pid in _members(pgid))


def _end_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and _alive(proc.pid):
        time.sleep(0.02)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
