"""Background server processes: own process group, output in a log file, clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Every daemon the harness started this session, so that a failing test can show their logs.
STARTED: list[Daemon] = []


class Daemon:
    """One server process. Its own session, so stopping it also ends what it spawned."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        if self not in STARTED:
            STARTED.append(self)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def check(self) -> None:
        """Raise, with the end of the log, if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``ready`` until it is true; fail early (with the log) if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                ok = ready()
            except Exception:  # not ready yet, whatever the probe raised
                ok = False
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: {what} not ready after {timeout:.0f}s; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Signal the process group, wait, and kill what is left after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, self.stop_signal)
            if not _exited(proc.pid, timeout):
                _signal_group(proc.pid, signal.SIGKILL)
        # The leader is a zombie until reaped, so its process group id cannot have been
        # reused: children that outlived it (and would hold ports) are still ours to kill.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.proc = None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        """The last ``lines`` lines of the log, of what was written after byte ``since``."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _exited(pid: int, timeout: float) -> bool:
    """Wait for a child to exit without reaping it (WNOWAIT); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a short command; raise with its output if it fails; return its stdout."""
    args = [str(a) for a in argv]
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout
