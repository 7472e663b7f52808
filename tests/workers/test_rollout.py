"""Deployments on the real engine: health-gated rollout, backups, automatic rollback.

Each test drives one target through the worker's entry points against the private
Docker engine, the local registry, a git server over HTTP and the anything-llm stand-in,
whose storage refuses a schema migrated by a newer version: a rollback that forgets to
restore the data cannot pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rollhook.records import deployments
from rollhook.records import targets as target_records
from tests.harness import infra_files
from tests.workers.deployer import Deployer
from workers import logs
from workers.backup import BackupStore

pytestmark = pytest.mark.engine


def step_names(record: dict[str, Any]) -> list[str]:
    return [step["name"] for step in record.steps]


def test_first_deployment_and_an_upgrade_keep_the_data(deployer: Deployer) -> None:
    first_commit = deployer.commit("1.0.0", "anything-llm 1.0.0")
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    assert first.commit == first_commit
    assert deployer.app_version() == "1.0.0"
    new_image = first.images["anything-llm"]["new"]
    assert new_image.startswith(deployer.standin.ref("1.0.0") + "@sha256:")
    env_key = (deployer.dirs.work / ".env").read_text()
    assert "SIG_KEY=" in env_key  # rollhook created the bind-mounted .env as a file

    second_commit = deployer.commit("2.0.0", "anything-llm 2.0.0")
    second = deployer.deploy()
    assert second.status == "succeeded", second.log
    assert second.commit == second_commit
    assert second.previous_deployment_id == first.id
    assert second.images["anything-llm"]["old"] == new_image
    assert deployer.app_version() == "2.0.0"
    assert deployer.schema() == 2
    db = (deployer.storage / "anythingllm.db").read_text()
    assert "1.0.0 write" in db and "migrated 1 -> 2" in db  # the data came along
    assert (deployer.dirs.work / ".env").read_text().startswith(env_key.strip())
    assert step_names(second) == [
        "sync", "plan", "preflight", "backup", "stop", "snapshot", "start", "gate",
    ]  # fmt: skip
    state = deployer.state()
    assert state.current_deployment_id == second.id
    assert state.last_good_deployment_id == second.id

    # The backup holds the data as 1.0.0 left it, including the runtime .env.
    backup = BackupStore(deployer.dirs.backups).get(second.backup_id)
    assert backup.complete
    [storage_dir] = [s for s in backup.sources if s.path.endswith("/storage")]
    copy = deployer.dirs.backups / backup.id / storage_dir.dir
    assert (copy / "schema_version").read_text().strip() == "1"


def test_the_same_desired_state_again_is_a_recorded_no_op(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    again = deployer.deploy(manual=True)
    assert again.status == "no_op"
    assert "already matches" in again.reason


def test_a_commit_outside_the_watched_path_changes_nothing(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.repo.commit({"docs/README.md": "notes"}, message="docs only")
    record = deployer.deploy()
    assert record.status == "no_op"
    assert "no watched path changed" in record.reason


@pytest.mark.parametrize("broken", ["3.0.0-crash", "3.0.0-never-healthy"])
def test_a_broken_release_rolls_back_with_the_data_restored(
    deployer: Deployer, broken: str
) -> None:
    deployer.commit("2.0.0")
    good = deployer.deploy()
    assert good.status == "succeeded", good.log
    before = (deployer.storage / "anythingllm.db").read_text()

    deployer.commit(broken, f"release {broken}")
    if broken.endswith("never-healthy"):
        deployer.target.health.timeout = 5
    bad = deployer.deploy()

    assert bad.status == "rolled_back", bad.log
    assert "gate" in step_names(bad) and "rollback" in step_names(bad)
    # 2.0.0 serves again, which it can only do on storage its own schema migrated.
    assert deployer.app_version() == "2.0.0"
    assert deployer.schema() == 2
    restored = (deployer.storage / "anythingllm.db").read_text()
    assert restored.startswith(before.rsplit("\n", 3)[0])
    assert "-> 3" not in restored  # the broken release's migration is gone
    state = deployer.state()
    assert state.current_deployment_id == good.id
    assert state.failed_fingerprint == bad.fingerprint

    # The failed desired state is not retried by itself...
    retry = deployer.deploy()
    assert retry.status == "no_op"
    assert "failed before" in retry.reason
    assert deployer.app_version() == "2.0.0"


def test_a_person_may_retry_a_failed_desired_state(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("3.0.0-crash")
    assert deployer.deploy().status == "rolled_back"
    retried = deployer.deploy(manual=True)
    assert retried.status == "rolled_back"  # a person asked; it ran (and failed) again
    assert deployer.app_version() == "1.0.0"


def test_a_registry_push_pins_the_digest_until_git_moves_on(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"

    pinned = deployer.deploy(source="registry", image=deployer.standin.ref("2.0.0"))
    assert pinned.status == "succeeded", pinned.log
    assert deployer.app_version() == "2.0.0"
    assert "anything-llm" in deployer.state().pins

    # A later commit that leaves the image line alone keeps the pin.
    deployer.commit("1.0.0", "tweak", **{"environments/prod/anything-llm/notes.txt": "x"})
    kept = deployer.deploy()
    assert kept.status in {"succeeded", "no_op"}, kept.log
    assert deployer.app_version() == "2.0.0"

    # Git moving the image line on drops the pin.
    deployer.commit("2.0.0-slow", "move on")
    moved = deployer.deploy()
    assert moved.status == "succeeded", moved.log
    assert "anything-llm" not in deployer.state().pins
    assert moved.images["anything-llm"]["new"].startswith(deployer.standin.ref("2.0.0-slow"))


def test_a_burst_of_requests_coalesces_into_one_rollout_of_the_newest(
    deployer: Deployer,
) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    queued = []
    for n in range(5):
        deployer.commit("2.0.0", f"push {n}", **{"environments/prod/anything-llm/n": str(n)})
        queued.append(deployer.queue())
    newest = deployer.repo.head()
    deployer.run()
    records = [deployer.record(i) for i in queued]
    assert [r.status for r in records] == ["superseded"] * 4 + ["succeeded"]
    assert all(r.superseded_by == queued[-1] for r in records[:4])
    assert records[-1].commit == newest
    assert records[-1].requested["coalesced"] == queued[:4]


def test_a_manual_rollback_restores_the_data_and_holds_the_target(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    first = deployer.deploy()
    deployer.commit("2.0.0")
    assert deployer.deploy().status == "succeeded"
    assert deployer.schema() == 2

    back = deployer.deploy(action="rollback", manual=True)
    assert back.status == "succeeded", back.log
    assert back.commit == first.commit
    assert "restore" in step_names(back)
    assert deployer.app_version() == "1.0.0"
    assert deployer.schema() == 1  # 1.0.0 refuses schema 2: the data came back too
    state = deployer.state()
    assert state.held is True
    assert state.current_deployment_id == back.id


def test_a_rollback_to_a_named_deployment_that_is_not_good_is_refused(
    deployer: Deployer,
) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("3.0.0-crash")
    bad = deployer.deploy()
    refused = deployer.deploy(action="rollback", rollback_to=bad.id, manual=True)
    assert refused.status == "failed"
    assert "not a succeeded deployment" in refused.reason
    assert deployer.app_version() == "1.0.0"


def test_a_ref_outside_the_tracked_branch_is_refused(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    record = deployer.deploy(ref="0" * 40, manual=True)
    assert record.status == "failed"
    assert "not in the history of main" in record.reason
    with deployer.records.begin() as conn:
        assert deployments.get(conn, record.id).finished_at is not None


def test_a_late_webhook_naming_an_old_commit_never_goes_back(deployer: Deployer) -> None:
    old = deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    assert deployer.deploy().status == "succeeded"
    replayed = deployer.deploy(ref=old)  # an automatic event whose payload says `old`
    assert replayed.status == "no_op"
    assert replayed.commit == deployer.repo.head()
    assert deployer.app_version() == "2.0.0"


def test_a_paused_target_keeps_automatic_work_queued_without_spinning(
    deployer: Deployer,
) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    with deployer.records.begin() as conn:
        target_records.set_paused(conn, deployer.name, True, "incident")
    deployer.commit("2.0.0")
    queued = deployer.queue()
    runner = threading.Thread(target=deployer.run)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive()  # returned at once instead of retaking the lease forever
    assert deployer.record(queued).status == "queued"
    assert deployer.app_version() == "1.0.0"
    with deployer.records.begin() as conn:
        target_records.set_paused(conn, deployer.name, False, None)
    deployer.run()
    assert deployer.record(queued).status == "succeeded"


def test_two_rollbacks_in_a_row_go_further_back(deployer: Deployer) -> None:
    versions = ["1.0.0", "2.0.0", "2.0.0-slow"]
    for tag in versions:
        deployer.commit(tag)
        assert deployer.deploy().status == "succeeded"
    first = deployer.deploy(action="rollback", manual=True)
    assert first.status == "succeeded", first.log
    assert deployer.app_version() == "2.0.0"
    second = deployer.deploy(action="rollback", manual=True)
    assert second.status == "succeeded", second.log
    assert deployer.app_version() == "1.0.0"  # not back to 2.0.0-slow
    assert deployer.schema() == 1  # with the data as 1.0.0 left it


def test_the_stop_step_waits_out_the_targets_stop_timeout(
    make_deployer: Callable[..., Deployer], standin: Any
) -> None:
    """stop_timeout: 14s on a stand-in whose shutdown takes 11 s (its compose file says
    stop_grace_period: 10s, compose's default too): the old version shuts down cleanly
    instead of being killed at 10 s with its work half done."""
    deployer = make_deployer(repo="infra-grace", stop_timeout="14s")
    for tag in ("1.0.0", "2.0.0"):
        env = {"STOP_DELAY": "11"}
        deployer.repo.commit(infra_files(standin.ref(tag), deployer.port, environment=env), tag)
        record = deployer.deploy()
        assert record.status == "succeeded", record.log
    assert deployer.app_version() == "2.0.0"
    shutdowns = (deployer.storage / "shutdown.log").read_text().splitlines()
    assert shutdowns == ["1.0.0 shut down cleanly after 11s"]


def test_the_steps_and_log_lines_say_what_happened(
    deployer: Deployer, docker_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ref = deployer.standin.build("2.0.1-fresh", 2)
    docker_client.images.remove(ref)  # only the registry has it now: it must be pulled
    deployer.repo.commit(infra_files(ref, deployer.port), message="fresh")
    logs.name_deployments_in_lines()
    with caplog.at_level(logging.INFO):
        first = deployer.deploy()
    assert first.status == "succeeded", first.log
    details = {step["name"]: step["detail"] for step in first.steps}
    assert details["preflight"] == "pulled 1, 0 already present"
    assert details["start"] == (
        "docker-compose.yml applied with rollhook's override (digests, labels)"
    )
    # The worker's own format prints no extra field: the text names the deployment.
    about = f"target=llm deployment={first.id} delivery={first.trigger['delivery_id']}: "
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("rollhook.deploy")]
    assert lines and all(line.startswith(about) for line in lines), lines
    assert f"{about}succeeded" in lines

    content = infra_files(ref, deployer.port, environment={"MODE": "second"})
    deployer.repo.commit(content, message="same image, another setting")
    second = deployer.deploy()
    assert second.status == "succeeded", second.log
    details = {step["name"]: step["detail"] for step in second.steps}
    assert details["preflight"] == "pulled 0, 1 already present"
