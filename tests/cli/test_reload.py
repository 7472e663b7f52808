"""``rollhook up`` applies an edited targets file (or a SIGHUP) without a restart, refusing
no connection meanwhile, and keeps what runs when the new file has problems."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cli.upstack import Up, still_running
from tests.harness.ports import free_port, port_open, stop_listening
from tests.harness.webapp import WebApp
from tests.stack import SECRETS

API = {"Authorization": f"Bearer {SECRETS['ROLLHOOK_API_TOKEN']}"}


def _target(path: str) -> dict[str, object]:
    return {
        "repo": "https://git.example.test/acme/infra.git",
        "path": path,
        "project": path,
        "service": "app",
        "health": {"url": "http://127.0.0.1:9/api/ping"},
    }


def _config(*names: str) -> str:
    return yaml.safe_dump({"targets": {name: _target(name) for name in names}})


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    running = Up(tmp_path, _config("app"))
    try:
        yield running
    finally:
        running.kill()


class Knocker:
    """Asks /healthz over a new connection each time, as webhook senders do, and counts
    what failed (a refused or cut connection, an answer other than 200)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Knocker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = httpx.get(f"{self.url}/healthz", timeout=10).status_code
            except httpx.HTTPError as exc:
                self.failed.append(repr(exc))
            else:
                self.answered += 1
                if status != 200:
                    self.failed.append(f"status {status}")
            time.sleep(0.02)


def _targets(up: Up) -> list[str]:
    answer = httpx.get(f"{up.url}/targets", headers=API, timeout=10)
    answer.raise_for_status()
    return sorted(target["name"] for target in answer.json()["targets"])


def _wait_for(what: object, check: object, up: Up, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen:\n{up.text}")


def _workers(up: Up) -> list[dict[int, int]]:
    """Each worker started so far, oldest first, as {pid: start time} (from its heartbeat line)."""
    processes = up.descendants()
    pids = re.findall(r"heartbeat of host local every \d+s as [^:]+:(\d+)", up.text)
    return [{int(pid): processes.get(int(pid), -1)} for pid in pids]


def _count(up: Up, text: str) -> int:
    return sum(text in line for _, line in up.lines)


@pytest.mark.slow
def test_an_edited_targets_file_is_applied_while_every_connection_is_answered(up: Up) -> None:
    up.start()
    up.wait_ready()
    assert _targets(up) == ["app"]
    config = up.root / "rollhook.yml"
    first_worker = _workers(up)[0]

    with Knocker(up.url) as knocker:
        config.write_text(_config("app", "blog"))
        _wait_for("the new target", lambda: "blog" in _targets(up), up)
        # The new worker is up and the old one, idle, has ended.
        _wait_for("a second worker", lambda: _count(up, " ready.") >= 2, up)
        _wait_for("the idle old worker's end", lambda: not still_running(first_worker), up, 30)
        time.sleep(2)
    assert knocker.failed == [], knocker.failed[:5]
    assert knocker.answered > 50
    assert _count(up, "rollhook.yml changed: applying it") == 1, up.text
    assert _count(up, "beat: Starting") == 2, up.text

    # A file with a problem changes nothing, and says so once.
    config.write_text(_config("app", "blog") + "  unknown: [\n")
    _wait_for("the refusal", lambda: _count(up, "rollhook.yml not applied: ") == 1, up, 30)
    time.sleep(2)
    assert _count(up, "rollhook.yml not applied: ") == 1, up.text
    assert _targets(up) == ["app", "blog"]
    # Put back as it runs: nothing to apply. Then bytes that are not text: refused.
    config.write_text(_config("app", "blog"))
    time.sleep(3)
    assert _count(up, "changed: applying it") == 1, up.text
    config.write_bytes(b"targets:\n  app: \xff\n")
    _wait_for("the second refusal", lambda: _count(up, "is not UTF-8 text") == 1, up, 30)

    # Fixed again, then asked by SIGHUP: both applied.
    config.write_text(_config("app"))
    _wait_for("the target's removal", lambda: _targets(up) == ["app"], up)
    assert up.proc is not None
    os.kill(up.proc.pid, signal.SIGHUP)
    _wait_for("the SIGHUP", lambda: _count(up, "SIGHUP: applying") == 1, up, 30)
    _wait_for("beat started again", lambda: _count(up, "beat: Starting") == 4, up)

    processes = up.descendants()
    took = up.interrupt()
    assert took < 10, up.text
    assert still_running(processes) == [], up.text
    assert up.text.splitlines()[-1] == "rollhook up: stopped"
    assert up.proc.returncode == 0


class Hang:
    """A loopback "git server" that takes connections and answers none until released:
    a git poll against it runs until then."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/acme/infra.git"
        self.held: list[socket.socket] = []
        self._released = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn = self.server.accept()[0]
                with self._lock:
                    if self._released:
                        conn.close()
                        return
                    self.held.append(conn)

    def release(self) -> None:
        """Close the held connections and the listener; the accept thread has ended on return
        (see stop_listening: a thread left in accept() takes a later server's clients)."""
        with self._lock:
            self._released = True
        ended = stop_listening(self.server, self._thread, timeout=10)
        assert ended, "the accept thread did not end"
        with self._lock:
            for conn in self.held:
                conn.close()


@pytest.mark.slow
def test_the_old_worker_finishes_its_running_task_before_it_ends(tmp_path: Path) -> None:
    hang = Hang()
    target = _target("app") | {"repo": hang.url}
    up = Up(tmp_path, yaml.safe_dump({"targets": {"app": target}}))
    try:
        up.start()
        up.wait_ready()
        # The worker's first poll of the target's repository is under way, and hangs.
        _wait_for("the first poll", lambda: hang.held, up, 60)
        old_worker = _workers(up)[0]

        changed = {"targets": {"app": target, "blog": _target("blog")}}
        (up.root / "rollhook.yml").write_text(yaml.safe_dump(changed))
        _wait_for("a second worker", lambda: _count(up, " ready.") >= 2, up)
        time.sleep(3)
        assert still_running(old_worker) == list(old_worker), up.text

        hang.release()  # the poll fails, its task ends, and so does the old worker
        _wait_for("the old worker's end", lambda: not still_running(old_worker), up)
        assert "app: poll failed (git)" in up.text, up.text
        assert up.proc is not None and up.proc.poll() is None
        assert up.interrupt() < 10, up.text
    finally:
        hang.release()
        up.kill()


@pytest.mark.slow
def test_the_proxy_follows_the_targets_that_have_proxy(tmp_path: Path) -> None:
    app = WebApp("blue")
    app.start()
    first, second = free_port(), free_port()
    target = _target("app") | {"health": {"url": f"http://127.0.0.1:{app.port}/"}}
    config = tmp_path / "rollhook.yml"

    def proxied(listen: int) -> str:
        spec = {"proxy": {"listen": f"127.0.0.1:{listen}", "port": app.port, "hold": "5s"}}
        return yaml.safe_dump({"targets": {"app": target | spec}})

    def serves(listen: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{listen}/", timeout=10).text == "blue /"
        except httpx.HTTPError:
            return False

    up = Up(tmp_path, yaml.safe_dump({"targets": {"app": target}}))
    try:
        up.start()
        up.wait_ready()
        config.write_text(proxied(first))
        _wait_for("the proxy", lambda: serves(first), up)
        _wait_for("its line", lambda: _count(up, "rollhook up: proxy started") == 1, up, 10)

        config.write_text(proxied(second))  # new routes: the proxy restarts with them
        _wait_for("the new route", lambda: serves(second), up)
        _wait_for("its line", lambda: _count(up, "proxy restarted for the new ") == 1, up, 10)
        assert not port_open(first), up.text

        config.write_text(yaml.safe_dump({"targets": {"app": target}}))
        _wait_for("the proxy's end", lambda: _count(up, "proxy stopped") == 1, up)
        assert not port_open(second), up.text
        assert up.interrupt() < 10, up.text
    finally:
        up.kill()
        app.stop()
