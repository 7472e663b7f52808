"""The quick start without GitHub: `rollhook demo`, then what it tells the operator to do.

Run as an operator runs it: the demo in one terminal (a subprocess whose output is read),
the printed commands in another: a commit and `rollhook send-test-hook demo --wait`, then
a broken release sent with the exact curl line the demo printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rollhook.records.schema import TERMINAL_STATUSES
from tests.harness import free_port

pytestmark = pytest.mark.engine


class Demo:
    def __init__(self, root: Path, docker_host: str) -> None:
        self.root = root
        self.port, self.app_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / "data"
        self.infra = self.data / "demo" / "infra"
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": str(root),
            "DOCKER_HOST": docker_host,
            "ROLLHOOK_DATA_DIR": str(self.data),
        }
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "demo", "--port", str(self.port),
             "--app-port", str(self.app_port)],
            cwd=root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        stream = self.proc.stdout
        assert stream is not None

        def read() -> None:
            for raw in iter(stream.readline, b""):
                self.output.append(raw.decode(errors="replace").rstrip("\n"))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def wait_for(self, marker: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            assert self.proc.poll() is None, self.text
            assert time.monotonic() < deadline, f"no {marker!r} in:\n{self.text}"
            time.sleep(0.5)

    def terminal(self, line: str) -> subprocess.CompletedProcess[str]:
        """A line typed into another terminal, with what the operator's shell would have:
        the secrets as `make run` hands them over (rollhook on PATH is the wrapper's job)."""
        secrets = self.data / "secrets"
        env = {
            **self.env,
            "ROLLHOOK_URL": self.url,
            "ROLLHOOK_API_TOKEN_FILE": str(secrets / "api_token"),
            "ROLLHOOK_GITHUB_SECRET_FILE": str(secrets / "github_secret"),
        }
        return subprocess.run(
            ["bash", "-c", line], cwd=self.root, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    def app(self) -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.app_port}/", timeout=3).text
        except httpx.HTTPError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(timeout=10)
        if self.proc.stdout is not None and not self.reader.is_alive():
            self.proc.stdout.close()


@pytest.fixture
def demo(tmp_path: Path, docker_host: str) -> Iterator[Demo]:
    running = Demo(tmp_path, docker_host)
    try:
        yield running
    finally:
        running.stop()
        down = subprocess.run(
            [sys.executable, "-m", "cli.main", "demo", "--down"],
            env=running.env, cwd=tmp_path, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr


def printed_command(text: str, starts: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith(starts))


def test_the_demo_deploys_then_a_signed_push_deploys_and_a_broken_release_rolls_back(
    demo: Demo,
) -> None:
    demo.wait_for("rollhook's log follows")
    assert "demo: succeeded" in demo.text
    assert "rollhook demo app 1.0.0" in demo.app()

    # 1. What the demo says to do: a commit, then a signed push with send-test-hook.
    commit = printed_command(demo.text, "sed -i 's/^APP_VERSION=.*/APP_VERSION=1.1.0/'")
    assert demo.terminal(commit).returncode == 0
    sent = demo.terminal(printed_command(demo.text, "rollhook send-test-hook demo --wait"))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "202" in sent.stdout and "demo: succeeded" in sent.stdout
    assert "rollhook demo app 1.1.0" in demo.app()

    # 2. A broken release, sent with the exact curl lines the demo printed.
    commit = printed_command(demo.text, "sed -i 's/^APP_VERSION=.*/APP_VERSION=2.0.0/'")
    assert demo.terminal(commit).returncode == 0
    body = printed_command(demo.text, "body=")
    curl = printed_command(demo.text, "curl -sS")
    answer = demo.terminal(f"{body}\n{curl}")
    assert '"status":"queued"' in answer.stdout, answer.stdout + answer.stderr
    event = re.search(r'"id":"(e\w+)"', answer.stdout)
    assert event is not None

    token = (demo.data / "secrets" / "api_token").read_text().strip()
    api = httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        [last] = api.get("/deployments", params={"target": "demo", "limit": 1}).json()[
            "deployments"
        ]
        if last["trigger"]["event_id"] == event.group(1) and last["status"] in TERMINAL_STATUSES:
            break
        time.sleep(1)
    api.close()
    status = last["status"]
    assert status == "rolled_back", demo.text
    page = demo.app()
    assert "rollhook demo app 1.1.0" in page
    assert "migrated" not in page  # the data as 1.1.0 left it, restored

    # The status table names what serves, and that Git wants another (the broken release,
    # rolled back: out of sync until the next commit); the worker's lines name the deployment.
    table = demo.terminal("rollhook status").stdout.splitlines()
    assert table[1].split()[:3] == ["demo", "out_of_sync", "1.1.0"], table
    assert re.search(r"target=demo deployment=d\w+ delivery=\d+: rolled_back", demo.text)
