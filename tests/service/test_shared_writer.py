"""Two web processes (uvicorn ``--workers 2``) and the records writer they share.

One writer commits for both; when the web process that started it is killed, the other
answers 503 for a moment (never a 202 for an event that is not stored), finds or starts
the next writer, and the restarted process joins it: one writer again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.harness.ports import free_port
from tests.service.support import API_TOKEN, TARGETS_YAML

REPO = Path(__file__).parents[2]


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found.append((int(entry.name), int(stat.rsplit(")", 1)[1].split()[1]), argv))
    return found


def web_processes(master: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing's children of its master)."""
    return [pid for pid, parent, argv in processes() if parent == master and b"spawn_main" in argv]


def writers(master: int) -> list[tuple[int, int]]:
    """(pid, web process) of each records writer started by these web processes."""
    web = set(web_processes(master))
    return [
        (pid, parent)
        for pid, parent, argv in processes()
        if parent in web and b"service.writer" in argv
    ]


def test_two_web_processes_share_one_writer_and_survive_its_owner(tmp_path: Path) -> None:
    (tmp_path / "rollhook.yml").write_text(TARGETS_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLHOOK_")} | {
        "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml"),
        "ROLLHOOK_DATA_DIR": str(tmp_path / "data"),
        "ROLLHOOK_API_TOKEN": API_TOKEN,
        "PYTHONPATH": str(REPO),
    }
    subprocess.run(
        [sys.executable, "-c", "from cli.processes import prepare; prepare()"],
        env=env, cwd=REPO, check=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
         "--port", str(port), "--workers", "2"],
        env=env, cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    answers: Counter[int] = Counter()
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=15,
        )

        def deploy() -> int:
            code = client.post("/deploy", json={"target": "hello"}).status_code
            answers[code] += 1
            return code

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    deploy() == 202
                    and len(writers(web.pid)) == 1
                    and len(web_processes(web.pid)) == 2
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        [(writer, owner)] = writers(web.pid)  # one writer for two web processes
        assert len(web_processes(web.pid)) == 2
        for _ in range(20):
            deploy()
        os.kill(owner, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code = 0
            with contextlib.suppress(httpx.HTTPError):  # a connection to the killed one
                code = deploy()
            found = writers(web.pid)
            replaced = len(found) == 1 and found[0][0] != writer
            if replaced and code == 202 and len(web_processes(web.pid)) == 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no single new writer: {writers(web.pid)}")
        for _ in range(20):  # both processes, through the new writer
            assert deploy() == 202
        assert len(writers(web.pid)) == 1  # the restarted process found it too
        client.close()
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(60)
    assert set(answers) <= {202, 503}, answers
    with sqlite3.connect(tmp_path / "data" / "records.sqlite") as db:
        stored = db.execute("select count(*) from events").fetchone()[0]
    assert stored >= answers[202]  # every 202 is a committed row
    assert stored <= answers[202] + answers[503]
