"""The process commands run what the Procfile runs, with the same hardening."""

from __future__ import annotations

from pathlib import Path

from cli.processes import _argv
from rollhook.settings import Settings

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def test_the_web_process_never_trusts_forwarded_headers_by_itself() -> None:
    # uvicorn believes X-Forwarded-For from loopback peers unless told not to; only
    # ROLLHOOK_TRUSTED_PROXIES may decide whose address a client really has.
    web = _argv("web", Settings(), "127.0.0.1", 8000)
    assert "--no-proxy-headers" in web
    procfile_web = next(
        line for line in PROCFILE.read_text().splitlines() if line.startswith("web:")
    )
    assert "--no-proxy-headers" in procfile_web
    readme = (PROCFILE.parent / "README.md").read_text()
    readme_web = next(line for line in readme.splitlines() if line.startswith("| web |"))
    assert "--no-proxy-headers" in readme_web
    # A bound on connections held at once (each may buffer up to the body cap).
    assert web[web.index("--limit-concurrency") + 1] == "256"
    assert "--limit-concurrency 256" in procfile_web


def test_the_worker_consumes_every_queue() -> None:
    worker = _argv("worker", Settings(worker_concurrency=3), "127.0.0.1", 8000)
    assert worker[worker.index("-Q") + 1] == "deploy,notify,housekeeping,backup"
    assert worker[worker.index("--concurrency") + 1] == "3"
