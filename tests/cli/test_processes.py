"""The process commands run what the Procfile runs, with the same hardening."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.processes import _argv, processes
from rollhook.settings import Settings
from rollhook.targets import Target
from service import serve
from tests.harness.ports import free_port, port_open
from tests.harness.webapp import WebApp
from tests.stack import SECRETS
from workers.proxy import Layout, Proxy, Switch

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def test_the_web_process_never_trusts_forwarded_headers_by_itself() -> None:
    # uvicorn believes X-Forwarded-For from loopback peers unless told not to; only
    # ROLLHOOK_TRUSTED_PROXIES may decide whose address a client really has.
    assert _argv("web", Settings(), "127.0.0.1", 8000)[1:3] == ["-m", "service.serve"]
    web = serve.config("127.0.0.1", 8000, 1)
    assert web.proxy_headers is False
    procfile_web = next(
        line for line in PROCFILE.read_text().splitlines() if line.startswith("web:")
    )
    assert "--no-proxy-headers" in procfile_web
    readme = (PROCFILE.parent / "README.md").read_text()
    readme_web = next(line for line in readme.splitlines() if line.startswith("| web |"))
    assert "--no-proxy-headers" in readme_web
    # A bound on connections held at once (each may buffer up to the body cap).
    assert web.limit_concurrency == 256
    assert "--limit-concurrency 256" in procfile_web
    assert web.server_header is False
    assert "--no-server-header" in procfile_web


def test_the_worker_consumes_every_queue() -> None:
    worker = _argv("worker", Settings(worker_concurrency=3), "127.0.0.1", 8000)
    assert worker[worker.index("-Q") + 1] == "deploy,notify,housekeeping,backup"
    assert worker[worker.index("--concurrency") + 1] == "3"


@pytest.mark.parametrize(
    ("proxies", "expected"),
    [
        ((), ("web", "worker", "beat")),
        ((False,), ("web", "worker", "beat")),
        ((False, True), ("web", "worker", "beat", "proxy")),
        ((True,), ("web", "worker", "beat", "proxy")),
    ],
)
def test_up_runs_the_proxy_when_a_target_has_proxy(
    proxies: tuple[bool, ...], expected: tuple[str, ...]
) -> None:
    targets = {}
    for n, proxied in enumerate(proxies):
        raw: dict[str, object] = {
            "repo": "https://github.com/acme/infra.git",
            "project": f"p{n}",
            "service": "web",
        }
        if proxied:
            raw["proxy"] = {"listen": f"127.0.0.1:{18080 + n}", "port": 13001 + 2 * n}
        targets[f"t{n}"] = Target.model_validate({"name": f"t{n}", **raw})
    assert processes(targets) == expected
    # rollhook's own web process behind the proxy (ROLLHOOK_PUBLIC_HOST) needs it too.
    assert processes(targets, "hooks.example.com")[-1] == "proxy"
    # The proxy runs as `rollhook proxy` does, from the same configuration.
    assert _argv("proxy", Settings(), "127.0.0.1", 8000)[1:] == ["-m", "cli.main", "proxy"]


def test_rollhook_up_runs_the_proxy_of_a_start_first_target(tmp_path: Path) -> None:
    app = WebApp("blue")
    listen, port = free_port(), app.port
    (tmp_path / "rollhook.yml").write_text(
        f"""
targets:
  web:
    repo: https://github.com/acme/infra.git
    project: web
    service: web
    strategy: start-first
    health: {{url: "http://127.0.0.1:{port}/"}}
    proxy: {{listen: "127.0.0.1:{listen}", port: {port}, hold: 30s}}
"""
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml"),
        "ROLLHOOK_DATA_DIR": str(tmp_path / "d"),
        "PYTHONUNBUFFERED": "1",
        **SECRETS,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        app.start()
        deadline = time.monotonic() + 60
        while not port_open(listen) and process.poll() is None:
            assert time.monotonic() < deadline, "the proxy never listened"
            time.sleep(0.1)
        assert process.poll() is None
        # No deployment yet: the records (migrated by up) say blue, proxy.port, serves.
        assert httpx.get(f"http://127.0.0.1:{listen}/", timeout=30).text == "blue /"
        with Proxy(Layout(tmp_path / "d" / "proxy")) as driver:
            assert driver.state("web") == Switch(app.address, True, 30.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0
        assert not port_open(listen)
    finally:
        app.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=30)[0].decode()
    assert "worker, beat and proxy started" in output
    assert re.search(r"^proxy +\| rollhook proxy: web on 127\.0\.0\.1:", output, re.MULTILINE)
    assert "could not read which colour serves" not in output
