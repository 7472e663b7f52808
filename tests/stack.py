"""A whole rollhook (web, worker, beat) as real processes, for end-to-end tests.

Each process runs exactly as the Procfile runs it, with settings from the environment.
Logs go to files under the test's directory and are printed when a test fails, which is
how a broken end-to-end test explains itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from rollhook.records.schema import TERMINAL_STATUSES
from tests.harness import free_port

SECRETS = {
    "ROLLHOOK_GITHUB_SECRET": "gh-secret-for-tests",
    "ROLLHOOK_GITLAB_TOKEN": "gl-token-for-tests",
    "ROLLHOOK_REGISTRY_TOKEN": "registry-token-for-tests",
    "ROLLHOOK_DOCKERHUB_TOKEN": "dockerhub-token-for-tests",
    "ROLLHOOK_HARBOR_TOKEN": "harbor-token-for-tests",
    "ROLLHOOK_API_TOKEN": "api-token-for-tests",
}


class Stack:
    def __init__(self, root: Path, config: str, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / "data"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        (root / "rollhook.yml").write_text(config)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "ROLLHOOK_CONFIG": str(root / "rollhook.yml"),
            "ROLLHOOK_DATA_DIR": str(self.data_dir),
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            **SECRETS,
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {SECRETS['ROLLHOOK_API_TOKEN']}"},
            timeout=30.0,
        )

    # -- processes -------------------------------------------------------------------

    def start(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        as_name: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """``rollhook <name> <args>``, known (and logged) as ``as_name`` (default: name);
        ``env`` over the stack's (a worker of another host: its engine and data dir)."""
        argv = [sys.executable, "-m", "cli.main", name, *args]
        key = as_name or name
        with open(self.logs / f"{key}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[key] = proc
        return proc

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a process and all of its children (a whole Celery worker, say)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.api.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited early:\n{self.log(name)}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"rollhook did not become ready:\n{self.log('web')}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(
            f"===== {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(self.logs.glob("*.log"))
        )

    # -- talking to it ---------------------------------------------------------------

    def github_push(self, payload: dict[str, Any], delivery: str) -> httpx.Response:
        body = json.dumps(payload).encode()
        secret = SECRETS["ROLLHOOK_GITHUB_SECRET"].encode()
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return httpx.post(
            f"{self.url}/hooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
            },
            timeout=30,
        )

    def deployments(self, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if target:
            params["target"] = target
        answer: list[dict[str, Any]] = self.api.get("/deployments", params=params).json()[
            "deployments"
        ]
        return answer

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        record: dict[str, Any] = self.api.get(f"/deployments/{deployment_id}").json()
        return record

    def latest(self, deployment_id: str) -> dict[str, Any]:
        """A deployment, or the one it was coalesced into (as an operator follows it)."""
        record = self.deployment(deployment_id)
        while record["status"] == "superseded" and record.get("superseded_by"):
            record = self.deployment(record["superseded_by"])
        return record

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; last: {last}\n{self.all_logs()}")

    def wait_final(self, event_id: str, timeout: float = 180) -> list[dict[str, Any]]:
        """The deployments an event led to, once all of them are final."""

        def done() -> list[dict[str, Any]] | None:
            event = self.api.get(f"/events/{event_id}").json()
            jobs = event.get("jobs") or []
            ids = [j["deployment_id"] for j in jobs if j.get("deployment_id")]
            if not jobs or len(ids) != len(jobs):
                return None
            records = [self.latest(i) for i in ids]
            return records if all(r["status"] in TERMINAL_STATUSES for r in records) else None

        result: list[dict[str, Any]] = self.wait_for(done, timeout, f"event {event_id}")
        return result


@contextmanager
def running_stack(
    root: Path,
    config: str,
    env: dict[str, str],
    processes: tuple[str, ...] = ("web", "worker", "beat"),
) -> Iterator[Stack]:
    stack = Stack(root, config, env)
    try:
        for name in processes:
            stack.start(name)
        stack.wait_ready()
        yield stack
    except BaseException:
        sys.stderr.write(stack.all_logs())
        raise
    finally:
        stack.stop()
