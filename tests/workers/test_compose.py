"""Compose as a child process: pure helpers, the real binary's config, a real engine's up/stop.

Child-process handling (workers/procs.py) is tested here too: compose is its main user.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.harness import compose_file, free_port
from workers import procs
from workers.compose import (
    Compose,
    ComposeSpec,
    config_hash,
    find_compose,
    render_override,
    write_override,
)
from workers.engine import DockerEngine
from workers.errors import InfrastructureError, OperatorError, StepTimeout
from workers.health import gate

DIGEST = "sha256:" + "a" * 64


# -- child processes ----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs a few seconds on (a SIGKILL lands asynchronously)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat[stat.rindex(")") + 2] == "Z":
            return False
        time.sleep(0.02)
    return True


def test_a_deadline_ends_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    groups: list[procs.ProcessGroup] = []
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    with pytest.raises(StepTimeout, match="deadline"):
        procs.run(["sh", "-c", script], env=procs.child_env(), timeout=0.5, on_spawn=groups.append)
    assert len(groups) == 1 and groups[0].leader_start > 0
    assert not _alive(int(pidfile.read_text()))
    assert not procs.is_ours(groups[0])


def test_what_a_child_leaves_running_is_ended_with_it() -> None:
    done = procs.run(["sh", "-c", "sleep 60 & echo $!"], env=procs.child_env(), timeout=10)
    assert done.returncode == 0
    assert not _alive(int(done.stdout))


def test_end_group_ends_only_the_group_it_recorded() -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = procs.group_led_by(child.pid)
        assert record is not None
        reused = procs.ProcessGroup(child.pid, record.leader_start + 1, record.boot_id)
        other_boot = procs.ProcessGroup(child.pid, record.leader_start, "another-boot")
        assert not procs.end_group(reused)
        assert not procs.end_group(other_boot)
        assert child.poll() is None
        journal_entry = {**record.to_dict(), "what": "compose"}  # as a journal stores it
        assert procs.end_group(journal_entry)
        assert child.wait(timeout=10) == -15
    finally:
        child.kill()
        child.wait()


def test_output_cap_and_missing_programs_are_infrastructure_errors() -> None:
    with pytest.raises(InfrastructureError, match="more than 1000 bytes"):
        procs.run(["head", "-c", "5000", "/dev/zero"], env=procs.child_env(), timeout=10,
                  stdout_cap=1000)  # fmt: skip
    with pytest.raises(InfrastructureError, match="cannot run"):
        procs.run(["/nonexistent/compose"], env=procs.child_env(), timeout=10)


# -- pure helpers -------------------------------------------------------------------------


def test_override_pins_every_service_and_labels_only_the_gated_one(tmp_path: Path) -> None:
    # A label that changes per deployment on every service would make compose recreate
    # services whose own config did not change.
    labels = {"web": {"rollhook.target": "llm", "rollhook.commit": "c" * 40}}
    images = {"web": f"r.test/web:1@{DIGEST}", "db": f"r.test/db@{DIGEST}"}
    assert yaml.safe_load(render_override(images, labels)) == {
        "services": {
            "db": {"image": images["db"]},
            "web": {"image": images["web"], "labels": labels["web"]},
        }
    }
    path = write_override(tmp_path / "deployments" / "d1" / "override.yml", images, labels)
    assert path.read_text() == render_override(images, labels)
    assert [p.name for p in path.parent.iterdir()] == ["override.yml"]


def test_override_gives_the_gated_service_its_stop_grace() -> None:
    images = {"web": f"r.test/web:1@{DIGEST}", "db": f"r.test/db@{DIGEST}"}
    body = yaml.safe_load(render_override(images, {}, {"web": 45.0, "extra": 0.5}))
    assert body["services"]["web"] == {"image": images["web"], "stop_grace_period": "45s"}
    assert body["services"]["db"] == {"image": images["db"]}  # its own compose value stays
    assert body["services"]["extra"] == {"stop_grace_period": "0.5s"}


def test_config_hash_is_stable_and_sees_what_matters() -> None:
    config: dict[str, Any] = {
        "name": "llm",
        "services": {
            "app": {"image": "r.test/app:1", "environment": {"A": "1", "B": "2"}, "labels": {}},
        },
    }
    images = {"app": f"r.test/app:1@{DIGEST}"}
    same = {"services": {"app": {"labels": {}, "environment": {"B": "2", "A": "1"},
                                 "image": "r.test/app:1"}}, "name": "llm"}  # fmt: skip
    labelled = {"name": "llm", "services": {"app": {
        **config["services"]["app"], "labels": {"rollhook.config-hash": "x"}}}}  # fmt: skip
    changed = {"name": "llm", "services": {"app": {
        **config["services"]["app"], "environment": {"A": "1", "B": "3"}}}}  # fmt: skip

    base = config_hash(config, images)
    assert base.startswith("sha256:") and len(base) == 71
    assert config_hash(same, images) == base
    assert config_hash(labelled, images) == base  # the override's own labels do not count
    assert config_hash(changed, images) != base
    assert config_hash(config, {"app": f"r.test/app:1@sha256:{'b' * 64}"}) != base


# -- the real compose binary, no engine needed ---------------------------------------------


@pytest.fixture(scope="module")
def compose_argv() -> list[str]:
    return find_compose()


def test_found_compose_is_v2_20_or_newer(compose_argv: list[str]) -> None:
    out = procs.run([*compose_argv, "version", "--short"], env=procs.child_env(), timeout=30)
    major, minor = (int(x) for x in out.stdout.decode().strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= (2, 20)


def _layout(tmp_path: Path, compose_text: str, release_env: str | None) -> ComposeSpec:
    release, work = tmp_path / "releases" / "abc", tmp_path / "work"
    release.mkdir(parents=True)
    work.mkdir()
    (release / "docker-compose.yml").write_text(compose_text)
    env_files = []
    if release_env is not None:
        (release / ".env").write_text(release_env)
        env_files.append(release / ".env")
    return ComposeSpec("proj", work, [release / "docker-compose.yml"], env_files, release)


def test_interpolation_reads_the_release_and_host_env_files_only(
    compose_argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "services:\n  app:\n    image: r.test/app:${TAG:-none}\n    environment:\n"
        "      FROM_WORK: ${SIG_KEY:-unset}\n      SECRET: ${SECRET:-unset}\n"
        "      LEAK: ${ROLLHOOK_API_TOKEN:-unset}\n"
        "    volumes:\n      - ./storage:/data\n"
        "      - ${ROLLHOOK_RELEASE_DIR}/nginx.conf:/etc/nginx.conf\n"
    )
    spec = _layout(tmp_path, text, "TAG=1\nSECRET=from-git\n")
    # anything-llm's runtime .env sits in the project directory: it is data, not compose input.
    (spec.project_dir / ".env").write_text("SIG_KEY=runtime-secret\nTAG=work\n")
    host_env = tmp_path / "host.env"
    host_env.write_text("SECRET=from-host\n")
    monkeypatch.setenv("ROLLHOOK_API_TOKEN", "rollhook-own-secret")
    compose = Compose(compose_argv, None)

    spec = ComposeSpec(spec.project, spec.project_dir, spec.files,
                       [*spec.env_files, host_env], spec.release_dir)  # fmt: skip
    app = compose.config(spec)["services"]["app"]
    assert app["image"] == "r.test/app:1"
    assert app["environment"] == {"FROM_WORK": "unset", "SECRET": "from-host", "LEAK": "unset"}
    assert [v["source"] for v in app["volumes"]] == [
        str(spec.project_dir / "storage"),
        str(spec.release_dir / "nginx.conf"),
    ]

    # With no env file at all, still not the project directory's .env.
    bare = ComposeSpec(spec.project, spec.project_dir, spec.files, [], spec.release_dir)
    assert compose.config(bare)["services"]["app"]["image"] == "r.test/app:none"


def test_rejected_compose_files_are_operator_errors_without_secrets(
    compose_argv: list[str], tmp_path: Path
) -> None:
    compose = Compose(compose_argv, None)
    spec = _layout(tmp_path / "a", "services:\n  app:\n    image: x\n    bogus: 1\n", None)
    with pytest.raises(OperatorError, match="additional properties 'bogus' not allowed"):
        compose.config(spec)

    spec = _layout(tmp_path / "b", "services:\n  app:\n    image: x\n    mem_limit: ${PW}\n", None)
    host_env = tmp_path / "host.env"
    host_env.write_text("PW='hunter2-topsecret'\n")
    spec = ComposeSpec(spec.project, spec.project_dir, spec.files, [host_env], spec.release_dir)
    with pytest.raises(OperatorError) as rejected:
        compose.config(spec)
    assert "mem_limit" in str(rejected.value)
    assert "hunter2" not in str(rejected.value) and "topsecret" not in str(rejected.value)

    missing = ComposeSpec(spec.project, spec.project_dir, spec.files, [tmp_path / "nope.env"],
                          spec.release_dir)  # fmt: skip
    with pytest.raises(OperatorError, match=r"nope\.env"):
        compose.config(missing)


def test_an_unreachable_engine_is_an_infrastructure_error(
    compose_argv: list[str], tmp_path: Path
) -> None:
    spec = _layout(tmp_path, "services:\n  app:\n    image: r.test/app:1\n", None)
    compose = Compose(compose_argv, f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(InfrastructureError, match="Cannot connect to the Docker daemon"):
        compose.up(spec, timeout=60)


# -- against the private engine ------------------------------------------------------------


@pytest.fixture
def project(docker_host: str) -> Iterator[str]:
    """A compose project name of its own; its containers are removed afterwards."""
    name = f"composetest{int(time.time() * 1000) % 10**8}"
    yield name
    client = docker.DockerClient(base_url=docker_host, version="auto")
    try:
        label = f"com.docker.compose.project={name}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
    finally:
        client.close()


def test_up_pins_digests_and_labels_then_stop(
    compose_argv: list[str], docker_host: str, standin: Any, project: str, tmp_path: Path
) -> None:
    port = free_port()
    spec = _layout(tmp_path, compose_file(standin.ref("1.0.0")), f"SERVER_PORT={port}\n")
    # The runtime .env must exist before the bind mount, or Docker makes it a directory;
    # what it holds must never reach interpolation (it would move the app to port 1).
    (spec.project_dir / ".env").write_text("SERVER_PORT=1\n")
    pinned = standin.digest_ref("1.0.0")
    labels = {"rollhook.target": "t", "rollhook.deployment": "d1", "rollhook.commit": "c"}
    override = write_override(
        tmp_path / "override.yml", {"anything-llm": pinned}, {"anything-llm": labels}
    )
    spec = ComposeSpec(project, spec.project_dir, [*spec.files, override], spec.env_files,
                       spec.release_dir)  # fmt: skip
    spawned: list[procs.ProcessGroup] = []
    compose = Compose(compose_argv, docker_host, on_spawn=spawned.append)

    with DockerEngine(docker_host) as engine:
        engine.pull(pinned)
        compose.up(spec, timeout=120)
        assert spawned
        [app] = engine.containers(project)
        assert app.service == "anything-llm"
        assert app.image == pinned
        assert {k: app.labels[k] for k in labels} == labels
        assert pinned in app.repo_digests

        def watch() -> Any:
            return engine.state(app.container_id)

        url = f"http://127.0.0.1:{port}/api/ping"
        result = gate(url, timeout=30, settle=0.5, interval=0.1, watch=watch)
        assert result.ok, result.reason

        compose.stop(spec, ["anything-llm"], timeout=60, grace=5)
        state = engine.state(app.container_id)
        assert state is not None and not state.running and state.status == "exited"


def _slow_to_stop(tmp_path: Path, standin: Any, project: str, stop_delay: float) -> ComposeSpec:
    """The stand-in taking ``stop_delay`` seconds to shut down (then it leaves a line in
    its storage); its compose file says stop_grace_period: 10s, compose's default too."""
    port = free_port()
    text = compose_file(standin.ref("1.0.0"), environment={"STOP_DELAY": str(stop_delay)})
    spec = _layout(tmp_path, text, f"SERVER_PORT={port}\n")
    (spec.project_dir / ".env").write_text("")
    return ComposeSpec(project, spec.project_dir, spec.files, spec.env_files, spec.release_dir)


def _shutdowns(spec: ComposeSpec) -> list[str]:
    log = spec.project_dir / "storage" / "shutdown.log"
    return log.read_text().splitlines() if log.exists() else []


def test_stop_kills_after_the_grace_it_is_given(
    compose_argv: list[str], docker_host: str, standin: Any, project: str, tmp_path: Path
) -> None:
    spec = _slow_to_stop(tmp_path, standin, project, stop_delay=8)
    compose = Compose(compose_argv, docker_host)
    with DockerEngine(docker_host) as engine:
        compose.up(spec, timeout=120)
        [app] = engine.containers(project)
        compose.stop(spec, ["anything-llm"], timeout=60, grace=2)
        state = engine.state(app.container_id)
    assert state is not None and state.exit_code == 137  # SIGKILLed: its 8 s were not waited
    assert _shutdowns(spec) == []


def test_up_recreating_a_container_waits_out_the_override_grace(
    compose_argv: list[str], docker_host: str, standin: Any, project: str, tmp_path: Path
) -> None:
    """A shutdown longer than compose's 10 s finishes when the override gives it 14 s."""
    spec = _slow_to_stop(tmp_path, standin, project, stop_delay=11)
    compose = Compose(compose_argv, docker_host)
    pinned = standin.digest_ref("1.0.0")
    with DockerEngine(docker_host) as engine:
        engine.pull(pinned)
        for deployment in ("d1", "d2"):  # a new label: compose recreates the container
            override = write_override(
                tmp_path / deployment / "override.yml",
                {"anything-llm": pinned},
                {"anything-llm": {"rollhook.deployment": deployment}},
                grace={"anything-llm": 14},
            )
            files = [*spec.files, override]
            current = ComposeSpec(
                project, spec.project_dir, files, spec.env_files, spec.release_dir
            )
            compose.up(current, timeout=120)
        [app] = engine.containers(project)
        assert app.labels["rollhook.deployment"] == "d2"
    assert _shutdowns(spec) == ["1.0.0 shut down cleanly after 11s"]


def test_would_change_sees_a_setting_compose_would_recreate_for(
    compose_argv: list[str], docker_host: str, standin: Any, project: str, tmp_path: Path
) -> None:
    """The dry run behind adoption: nothing to do for what runs, a recreate for a new
    setting, a create for a service that does not run; and the dry run touches nothing."""
    port = free_port()
    spec = _layout(tmp_path, compose_file(standin.ref("1.0.0")), f"SERVER_PORT={port}\n")
    (spec.project_dir / ".env").write_text("")
    spec = ComposeSpec(project, spec.project_dir, spec.files, spec.env_files, spec.release_dir)
    compose = Compose(compose_argv, docker_host)
    assert compose.would_change(spec, timeout=120)  # nothing runs yet
    with DockerEngine(docker_host) as engine:
        compose.up(spec, timeout=120)  # the stand-in's tags are present on the engine
        [before] = engine.containers(project)
        assert not compose.would_change(spec, timeout=120)

        changed = tmp_path / "changed.yml"
        changed.write_text(compose_file(standin.ref("1.0.0"), environment={"NEW_SETTING": "1"}))
        other = ComposeSpec(project, spec.project_dir, [changed], spec.env_files,
                            spec.release_dir)  # fmt: skip
        assert compose.would_change(other, timeout=120)
        [after] = engine.containers(project)
    assert after.container_id == before.container_id  # a dry run
