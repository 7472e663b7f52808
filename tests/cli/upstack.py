"""``rollhook up`` as an operator runs it in a terminal: one process, its output, Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.harness import free_port
from tests.stack import SECRETS


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


class Up:
    """A ``rollhook up`` subprocess; every line it prints is kept with its arrival time."""

    def __init__(self, root: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        (root / "rollhook.yml").write_text(config)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "ROLLHOOK_CONFIG": str(root / "rollhook.yml"),
            "ROLLHOOK_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            **SECRETS,
            **(env or {}),
        }
        self.lines: list[tuple[float, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader = threading.Thread()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # As in a terminal: Ctrl-C goes to `rollhook up`'s process group only.
            start_new_session=True,
        )
        stream = self.proc.stdout
        assert stream is not None

        def read() -> None:
            for raw in iter(stream.readline, b""):
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_ready(self, timeout: float = 180) -> None:
        """The web process answers and the worker and beat said they are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.text
            try:
                web = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                web = False
            if web and " ready." in self.text and "beat: Starting" in self.text:
                return
            time.sleep(0.5)
        raise AssertionError(f"rollhook up did not become ready:\n{self.text}")

    def descendants(self) -> dict[int, int]:
        """Every process below ``rollhook up`` (pid -> start time), found through /proc."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        starts: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
                starts[int(entry.name)] = stat[1]
        found: dict[int, int] = {}
        todo = [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found[child] = starts[child]
                todo.append(child)
        return found

    def interrupt(self, timeout: float = 30) -> float:
        """Ctrl-C; returns the seconds until ``rollhook up`` exited."""
        assert self.proc is not None
        began = time.monotonic()
        os.kill(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=timeout)
        took = time.monotonic() - began
        self._close()
        return took

    def kill(self) -> None:
        """SIGKILL ``rollhook up`` and every process below it: each runs in a session of
        its own, so a signal to ``up``'s group alone would leave them running (a worker
        would go on polling and healing its targets through the tests that follow)."""
        if self.proc is not None and self.proc.poll() is None:
            below = self.descendants()
            os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in still_running(below):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # a session leader: its pool too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self._reader.join(timeout=10)  # EOF once every process holding the pipe ended
            if not self._reader.is_alive():
                self.proc.stdout.close()


def still_running(processes: dict[int, int]) -> list[int]:
    """Which of these processes (pid -> start time) still run (zombies count as gone)."""
    alive = []
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start and stat[2] != "Z":
            alive.append(pid)
    return alive
