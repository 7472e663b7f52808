"""rollhook as it runs in production: web, worker and beat processes, real webhooks.

A commit lands in the infra repo (served over HTTP), a signed GitHub push or a real
registry notification reaches the web process, and the worker rolls the anything-llm
stand-in out on the private Docker engine. These tests check what an operator sees:
the answers, the records, the app on its port, and the data in its storage.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rollhook.records.schema import TERMINAL_STATUSES
from tests.harness import INFRA_PATH, SERVICE, free_port, infra_files
from tests.harness.redis import RedisServer
from tests.stack import SECRETS, Stack, running_stack
from workers.compose import find_compose

pytestmark = pytest.mark.engine


class Infra:
    """The infra repo and the target that follows it."""

    def __init__(
        self, repo: Any, standin: Any, image_host: str, repository: str = "acme/anythingllm"
    ) -> None:
        self.repo, self.standin, self.image_host = repo, standin, image_host
        self.repository = repository
        self.port = free_port()
        self.project = f"e2e{uuid.uuid4().hex[:8]}"
        self.head = ""

    def config(self, **extra: Any) -> str:
        target = {
            "repo": self.repo.url,
            "branch": "main",
            "path": INFRA_PATH,
            "project": self.project,
            "service": SERVICE,
            "images": [f"{self.image_host}/{self.repository}"],
            "health": {
                "url": f"http://127.0.0.1:{self.port}/api/ping",
                "timeout": "30s",
                "settle": "1s",
                "interval": "0.2s",
            },
            "backup": {"keep": 3},
            **extra,
        }
        return yaml.safe_dump({"targets": {"llm": target}})

    def commit(self, tag: str, message: str = "deploy", **files: str | None) -> dict[str, Any]:
        """Commit and return the push payload GitHub would send for it."""
        image = self.standin.ref(tag, self.repository, registry_host=self.image_host)
        content = infra_files(image, self.port)
        content.update(files)
        before = self.head or "0" * 40  # the first commit creates the branch
        self.head = self.repo.commit(content, message=message)
        return {
            "ref": "refs/heads/main",
            "before": before,
            "after": self.head,
            "created": False,
            "deleted": False,
            "forced": False,
            "commits": [
                {
                    "id": self.head,
                    "message": message,
                    "author": {"name": "Dev", "email": "dev@example.test"},
                    "added": [],
                    "removed": [],
                    "modified": sorted(content),
                }
            ],
            "repository": {"full_name": "acme/infra", "clone_url": self.repo.url},
            "pusher": {"name": "dev"},
        }

    def app_version(self) -> str | None:
        try:
            if httpx.get(f"http://127.0.0.1:{self.port}/api/ping", timeout=2).status_code != 200:
                return None
            metrics = httpx.get(f"http://127.0.0.1:{self.port}/api/utils/metrics", timeout=2)
        except httpx.HTTPError:
            return None
        version: str = metrics.json()["appVersion"]
        return version

    def down(self, docker_host: str) -> None:
        subprocess.run(
            [*find_compose(), "-p", self.project, "down", "--timeout", "2"],
            env={"DOCKER_HOST": docker_host, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=False,
            timeout=120,
        )


@pytest.fixture
def infra(git_server: Any, standin: Any, registry: Any, docker_host: str) -> Iterator[Infra]:
    first = Infra(git_server.create_repo("infra"), standin, registry.host)
    yield first
    first.down(docker_host)


def queued_id(answer: httpx.Response) -> str:
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    assert body["status"] == "queued"
    event_id: str = body["id"]
    return event_id


def test_embedded_default_deploys_a_push_end_to_end(
    tmp_path: Path, infra: Infra, docker_host: str
) -> None:
    """No Redis: web, worker and beat on the embedded SQLite broker."""
    push = infra.commit("1.0.0", "anything-llm 1.0.0")
    env = {"DOCKER_HOST": docker_host, "ROLLHOOK_NOTIFY_CONSOLE": "true"}
    with running_stack(tmp_path, infra.config(), env) as stack:
        [first] = stack.wait_final(queued_id(stack.github_push(push, "dl-1")))
        assert first["status"] == "succeeded", first["log"]
        assert first["commit"] == infra.head
        assert first["trigger"]["delivery_id"] == "dl-1"
        assert first["trigger"]["source"] == "github"
        assert infra.app_version() == "1.0.0"
        # The console channel: the worker tells the deployment's start and end in its log.
        told = f"notification: llm: 1.0.0 deployed (deployment {first['id']}, github"
        stack.wait_for(lambda: told in stack.log("worker"), 30, "the console notification")
        assert f"notification: llm: deploying 1.0.0 (deployment {first['id']}" in stack.log(
            "worker"
        )

        push = infra.commit("2.0.0", "anything-llm 2.0.0")
        event_id = queued_id(stack.github_push(push, "dl-2"))
        [second] = stack.wait_final(event_id)
        assert second["status"] == "succeeded", second["log"]
        assert infra.app_version() == "2.0.0"
        assert second["images"]["anything-llm"]["old"] == first["images"]["anything-llm"]["new"]
        storage = stack.data_dir / "targets" / "llm" / "work" / "storage"
        db = (storage / "anythingllm.db").read_text()
        assert "1.0.0 write" in db and "migrated 1 -> 2" in db

        event = stack.api.get(f"/events/{event_id}").json()
        assert [d["id"] for d in event["deployments"]] == [second["id"]]
        assert [d["status"] for d in event["deployments"]] == ["succeeded"]

        # The CLI drives the same API: history, pause and resume, a rollback it follows.
        cli_env = {**stack.env, "ROLLHOOK_URL": stack.url}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cli.main", *args],
                env=cli_env, capture_output=True, text=True, check=False, timeout=300,
            )  # fmt: skip

        history = cli("history", "llm")
        assert second["id"] in history.stdout and "succeeded" in history.stdout
        assert cli("pause", "llm", "--reason", "incident 42").returncode == 0
        paused = stack.api.get("/targets").json()["targets"][0]
        assert (paused["paused"], paused["paused_reason"]) == (True, "incident 42")
        back = cli("rollback", "llm", "--wait")  # a person may roll back while paused
        assert back.returncode == 0, back.stdout + back.stderr
        assert "restore" in back.stdout and "llm: succeeded" in back.stdout
        assert infra.app_version() == "1.0.0"
        assert cli("resume", "llm").returncode == 0
        assert '"paused": false' in cli("status", "--json").stdout
        status = cli("status").stdout.splitlines()
        assert status[0].split() == ["TARGET", "STATE", "VERSION", "COMMIT", "DEPLOYMENT", "SINCE"]
        sync = stack.api.get("/targets").json()["targets"][0]["sync"]["status"]
        assert status[1].split()[:3] == ["llm", sync, "1.0.0"]  # the reconcile loop's word
        refused = cli("deploy", "ghost")
        assert refused.returncode == 3 and "404" in refused.stderr  # usage: no such target
    assert (stack.data_dir / "broker.sqlite").exists()


def test_duplicates_and_bursts_on_redis(
    tmp_path: Path, infra: Infra, docker_host: str, redis_url: str
) -> None:
    infra.commit("1.0.0")
    env = {"DOCKER_HOST": docker_host, "ROLLHOOK_REDIS_URL": redis_url.replace("/0", "/3")}
    with running_stack(tmp_path, infra.config(), env) as stack:
        push = infra.commit("1.0.0", "first", **{f"{INFRA_PATH}/n": "0"})
        event_id = queued_id(stack.github_push(push, "dl-same"))
        again = stack.github_push(push, "dl-same")
        assert again.status_code == 200
        assert again.json()["reason"] == "duplicate delivery"
        assert again.json()["id"] == event_id
        [record] = stack.wait_final(event_id)
        assert record["status"] == "succeeded", record["log"]
        assert len(stack.deployments("llm")) == 1

        events = []
        for n in range(1, 6):
            push = infra.commit("2.0.0", f"burst {n}", **{f"{INFRA_PATH}/n": str(n)})
            events.append(queued_id(stack.github_push(push, f"dl-burst-{n}")))
        records = [r for e in events for r in stack.wait_final(e)]
        rollouts = [r for r in records if r["status"] not in {"superseded", "no_op"}]
        assert 1 <= len(rollouts) <= 2, [r["status"] for r in records]
        assert all(r["status"] == "succeeded" for r in rollouts), rollouts[-1]["log"]
        # The last one to run looked at the newest commit (and found it already running
        # when only a file outside the compose config changed since the rollout).
        last = max(
            (r for r in records if r["status"] != "superseded"), key=lambda r: r["created_at"]
        )
        assert last["commit"] == infra.head
        assert last["status"] in {"succeeded", "no_op"}
        assert infra.app_version() == "2.0.0"


def test_a_worker_killed_mid_rollout_is_recovered(
    tmp_path: Path, infra: Infra, docker_host: str, redis_url: str
) -> None:
    infra.commit("1.0.0")
    env = {
        "DOCKER_HOST": docker_host,
        "ROLLHOOK_REDIS_URL": redis_url.replace("/0", "/4"),
        "ROLLHOOK_LEASE_SECONDS": "4",
    }
    with running_stack(tmp_path, infra.config(), env) as stack:
        [first] = stack.wait_final(queued_id(stack.github_push(infra.commit("1.0.0", "v1"), "a")))
        assert first["status"] == "succeeded", first["log"]

        event_id = queued_id(stack.github_push(infra.commit("2.0.0-slow", "slow v2"), "b"))

        def gating() -> str | None:
            for record in stack.deployments("llm"):
                steps = record["steps"]
                if steps and steps[-1]["name"] == "gate" and steps[-1]["outcome"] == "running":
                    return str(record["id"])
            return None

        deployment_id = stack.wait_for(gating, 60, "the slow release's health gate")
        stack.kill("worker", signal.SIGKILL)  # the whole worker: main process and children
        assert stack.deployment(deployment_id)["status"] == "running"
        stack.start("worker")
        [record] = stack.wait_final(event_id, timeout=90)
        assert record["id"] == deployment_id
        assert record["status"] in {"succeeded", "rolled_back"}, record["log"]
        assert record["attempt"] >= 2
        assert infra.app_version() in {"1.0.0", "2.0.0-slow"}


def test_a_registry_push_deploys_its_digest_and_the_pin_holds(
    tmp_path: Path, git_server: Any, standin: Any, registry: Any, docker_host: str
) -> None:
    token = SECRETS["ROLLHOOK_REGISTRY_TOKEN"]
    stack = Stack(tmp_path, "", {"DOCKER_HOST": docker_host})
    with registry.notifying(f"{stack.url}/hooks/registry", token) as host:
        # Its own repository: pushing tags others use would change their digests.
        repository = f"acme/e2e-{uuid.uuid4().hex[:6]}"
        infra = Infra(git_server.create_repo("infra"), standin, host, repository)
        try:
            standin.build("1.0.0", 1, repository=repository, registry_host=host)
            infra.commit("1.0.0")
            (tmp_path / "rollhook.yml").write_text(infra.config())
            for name in ("web", "worker", "beat"):
                stack.start(name)
            stack.wait_ready()
            [first] = stack.wait_final(queued_id(stack.github_push(infra.commit("1.0.0"), "g1")))
            # The registry retries its notification of the 1.0.0 push (made before rollhook
            # listened); when that lands first it deploys the head, and this finds nothing
            # changed since. Either way 1.0.0 serves.
            assert first["status"] in {"succeeded", "no_op"}, first["log"]
            assert infra.app_version() == "1.0.0"

            pushed = standin.build("1.1.0", 1, repository=repository, registry_host=host)
            digest = standin.digests[pushed]

            def pinned() -> dict[str, Any] | None:
                # The registry also retries its notification of the 1.0.0 push, made before
                # rollhook listened: that one is a no-op. The 1.1.0 push is the one to see.
                for record in stack.deployments("llm"):
                    hint = record["requested"].get("image") or {}
                    if hint.get("tag") == "1.1.0" and record["status"] in TERMINAL_STATUSES:
                        return record
                return None

            record = stack.wait_for(pinned, 90, "the registry notification's deployment")
            assert record["status"] == "succeeded", [
                (r["id"], r["status"], r["reason"], r["requested"], r["trigger"])
                for r in stack.deployments("llm")
            ]
            assert record["images"]["anything-llm"]["new"] == f"{pushed}@{digest}"
            assert infra.app_version() == "1.1.0"

            # A later commit that leaves the image line alone keeps the pinned digest.
            push = infra.commit("1.0.0", "config tweak", **{f"{INFRA_PATH}/notes": "x"})
            [later] = stack.wait_final(queued_id(stack.github_push(push, "g2")))
            assert later["status"] in {"succeeded", "no_op"}, later["log"]
            assert infra.app_version() == "1.1.0"
        except BaseException:
            sys.stderr.write(stack.all_logs())
            raise
        finally:
            stack.stop()
            infra.down(docker_host)


def test_events_accepted_while_the_broker_is_down_are_processed_once(
    tmp_path: Path, infra: Infra, docker_host: str
) -> None:
    redis = RedisServer(tmp_path / "redis", tmp_path / "redis-logs")
    redis.start()
    infra.commit("1.0.0")
    env = {"DOCKER_HOST": docker_host, "ROLLHOOK_REDIS_URL": redis.url}
    try:
        with running_stack(tmp_path / "stack", infra.config(), env) as stack:
            redis.stop()
            events = []
            for n in range(3):
                push = infra.commit("1.0.0", f"while down {n}", **{f"{INFRA_PATH}/n": str(n)})
                events.append(queued_id(stack.github_push(push, f"down-{n}")))
            for event_id in events:  # stored, waiting in the outbox
                jobs = stack.api.get(f"/events/{event_id}").json()["jobs"]
                assert [j["dispatched_at"] for j in jobs] == [None]
            redis.start()
            records = [r for e in events for r in stack.wait_final(e, timeout=120)]
            jobs = [j for e in events for j in stack.api.get(f"/events/{e}").json()["jobs"]]
            assert len(jobs) == 3 and all(j["consumed_at"] for j in jobs)
            assert len({j["deployment_id"] for j in jobs}) == 3  # each processed once
            assert len(stack.deployments("llm")) == 3
            assert any(r["status"] == "succeeded" for r in records)
            assert infra.app_version() == "1.0.0"
    finally:
        redis.stop()
