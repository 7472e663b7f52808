"""The API for people and CI: deploy, rollback, pause, resume and the reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from rollhook.jobs import Job
from rollhook.records import notifications
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.jobs import link_deployment
from service.views import public_url
from tests.service.support import API_TOKEN, Served, add_deployment, encode, payload, unique

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def queued_job(served: Served, response: Any) -> Job:
    assert response.status_code == 202, response.text
    [row] = served.jobs_of(response.json()["id"])
    return Job.from_json(row["payload"])


# -- who may call ------------------------------------------------------------------------


ENDPOINTS = [
    ("POST", "/deploy"),
    ("POST", "/rollback"),
    ("POST", "/targets/hello/pause"),
    ("POST", "/targets/hello/resume"),
    ("POST", "/targets/hello/sync"),
    ("GET", "/targets"),
    ("GET", "/targets/hello"),
    ("GET", "/hosts"),
    ("GET", "/events/e1"),
    ("GET", "/deployments"),
    ("GET", "/deployments/d1"),
]


def test_every_endpoint_needs_the_token(serve: Callable[..., Served]) -> None:
    app = serve(auth_failures_allowed=100)  # failures here must not limit other tests
    for method, path in ENDPOINTS:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_TOKEN}):
            response = app.client.request(method, path, headers=headers, json={"target": "hello"})
            assert response.status_code == 401, (method, path, headers)
            assert API_TOKEN not in response.text
    with app.records.connect() as conn:
        state = target_records.get(conn, "hello")
    assert state is not None
    assert not state.paused  # the refused pause did not happen


def test_without_a_token_the_api_does_not_exist(serve: Callable[..., Served]) -> None:
    app = serve(api_token=None)
    assert app.api("GET", "/targets").status_code == 404
    assert app.api("POST", "/deploy", json={"target": "hello"}).status_code == 404


# -- deploy --------------------------------------------------------------------------------


def test_deploy_queues_a_manual_job(served: Served) -> None:
    job = queued_job(
        served,
        served.api("POST", "/deploy", json={"target": "hello", "ref": "master", "actor": "ann"}),
    )
    assert (job.target, job.action, job.ref, job.manual) == ("hello", "deploy", "master", True)
    assert (job.trigger.source, job.trigger.actor) == ("api", "ann")


def test_a_person_may_force_past_the_deploy_window(served: Served) -> None:
    """``force`` is a person's word that the window is closed on purpose: it rides on the
    job (the record notes it); only a boolean is taken."""
    body = {"target": "hello", "force": True}
    assert queued_job(served, served.api("POST", "/deploy", json=body)).force is True
    assert queued_job(served, served.api("POST", "/rollback", json=body)).force is True
    plain = served.api("POST", "/deploy", json={"target": "hello"})
    assert queued_job(served, plain).force is False
    refused = served.api("POST", "/deploy", json={"target": "hello", "force": "yes"})
    assert (refused.status_code, refused.json()["reason"]) == (
        400,
        "'force' must be true or false",
    )


@pytest.mark.parametrize(
    "ref", ["6113728", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "release/1.2", "refs/heads/main"]
)
def test_deploy_accepts_branches_and_shas(served: Served, ref: str) -> None:
    job = queued_job(served, served.api("POST", "/deploy", json={"target": "hello", "ref": ref}))
    assert job.ref == ref.removeprefix("refs/heads/")


def test_deploy_with_an_image(served: Served) -> None:
    job = queued_job(
        served,
        served.api(
            "POST", "/deploy", json={"target": "infra", "image": "mintplexlabs/anythingllm:1.16.1"}
        ),
    )
    assert job.image is not None
    assert (job.image.repository, job.image.tag) == ("docker.io/mintplexlabs/anythingllm", "1.16.1")
    digest = "sha256:" + "ab" * 32
    job = queued_job(served, served.api("POST", "/deploy", json={"target": "hub", "image": digest}))
    assert job.image is not None
    assert (job.image.repository, job.image.digest) == ("docker.io/svendowideit/testhook", digest)


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        ({"target": "nope"}, 404, "unknown target 'nope'"),
        ({}, 400, "'target' must be a non-empty string"),
        (
            {"target": "hello", "ref": "--upload-pack=x"},
            400,
            "'ref' must be a branch name or a commit sha",
        ),
        ({"target": "hello", "ref": "a..b"}, 400, "'ref' must be a branch name or a commit sha"),
        ({"target": "hello", "ref": 12}, 400, "'ref' must be a non-empty string"),
        (
            {"target": "infra", "image": "quay.io/evil/image:1"},
            400,
            "image quay.io/evil/image is not one of target infra's images",
        ),
        (
            {"target": "infra", "image": "mintplexlabs/anythingllm"},
            400,
            "'image' needs a tag or a digest",
        ),
        (
            {"target": "infra", "image": "sha256:" + "ab" * 32},
            400,
            "a bare digest needs a target with exactly one image; name the image",
        ),
        ({"target": "infra", "image": "Not A Ref"}, 400, None),
    ],
)
def test_deploy_refuses(
    served: Served, body: dict[str, Any], code: int, reason: str | None
) -> None:
    response = served.api("POST", "/deploy", json=body)
    assert response.status_code == code, response.text
    if reason is not None:
        assert response.json()["reason"] == reason


@pytest.mark.parametrize("content", [b"{nope", b"[1]", b'"target"'])
def test_deploy_malformed_body(served: Served, content: bytes) -> None:
    response = served.api(
        "POST", "/deploy", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_idempotency_key_makes_a_retry_the_same_request(served: Served) -> None:
    key = {"idempotency-key": unique("ci-run")}
    first = served.api("POST", "/deploy", json={"target": "hello"}, headers=key)
    second = served.api("POST", "/deploy", json={"target": "hello"}, headers=key)
    assert first.status_code == 202
    assert second.json() == {
        "status": "ignored",
        "reason": "duplicate delivery",
        "id": first.json()["id"],
    }


# -- rollback ------------------------------------------------------------------------------


def test_rollback_to_the_last_good_one(served: Served) -> None:
    job = queued_job(served, served.api("POST", "/rollback", json={"target": "hello"}))
    assert (job.action, job.rollback_to, job.restore_data, job.manual) == (
        "rollback",
        None,
        None,
        True,
    )


def test_rollback_to_a_named_deployment(served: Served) -> None:
    good = add_deployment(served, "hello", "succeeded")
    job = queued_job(
        served,
        served.api("POST", "/rollback", json={"target": "hello", "to": good, "restore_data": True}),
    )
    assert (job.rollback_to, job.restore_data) == (good, True)


def test_rollback_refuses(served: Served) -> None:
    other = add_deployment(served, "infra", "succeeded")
    failed = add_deployment(served, "hello", "failed")
    cases = [
        ({"target": "hello", "to": "d-none"}, 404, "no deployment 'd-none'"),
        (
            {"target": "hello", "to": other},
            400,
            f"deployment {other} belongs to target infra, not hello",
        ),
        (
            {"target": "hello", "to": failed},
            400,
            f"deployment {failed} did not succeed (failed); pick one that did",
        ),
        ({"target": "hello", "restore_data": "yes"}, 400, "'restore_data' must be true or false"),
        ({"target": "ghost"}, 404, "unknown target 'ghost'"),
    ]
    for body, code, reason in cases:
        response = served.api("POST", "/rollback", json=body)
        assert (response.status_code, response.json()["reason"]) == (code, reason)


# -- pause and resume ----------------------------------------------------------------------


def frozen_push() -> bytes:
    doc = payload("github-push.json") | {"ref": "refs/heads/main"}
    doc["repository"] = {"clone_url": "https://github.com/acme/frozen.git"}
    return encode(doc)


def test_pause_and_resume(served: Served) -> None:
    paused = served.api("POST", "/targets/frozen/pause", json={"reason": "db migration"})
    assert paused.json() == {"status": "paused", "reason": "db migration", "target": "frozen"}
    state = {t["name"]: t for t in served.api("GET", "/targets").json()["targets"]}["frozen"]
    assert (state["paused"], state["paused_reason"]) == (True, "db migration")
    assert state["paused_at"].endswith("Z")
    assert served.github(frozen_push()).json()["reason"] == "target paused"
    # Automatic deployments are frozen; a person's explicit request still goes through
    # (an operator rolls back during the incident without resuming first).
    assert served.api("POST", "/deploy", json={"target": "frozen"}).status_code == 202
    assert served.api("POST", "/targets/frozen/resume").json() == {
        "status": "resumed",
        "target": "frozen",
    }
    assert served.github(frozen_push()).status_code == 202
    assert served.api("POST", "/targets/ghost/pause").status_code == 404


# -- reads -------------------------------------------------------------------------------------


def test_targets_summary(served: Served) -> None:
    good = add_deployment(served, "hub", "succeeded", commit="c" * 40)
    with served.records.begin() as conn:
        target_records.record_outcome(
            conn, "hub", 0, current=good, good=good, pins={"web": {"digest": "sha256:1"}}
        )
    listed = {t["name"]: t for t in served.api("GET", "/targets").json()["targets"]}
    assert set(listed) >= {"hello", "infra", "hub", "frozen"}
    hub = listed["hub"]
    assert hub["images"] == ["svendowideit/testhook"]
    assert hub["current_deployment"]["id"] == good
    assert hub["last_good_deployment"]["commit"] == "c" * 40
    assert hub["pins"] == {"web": {"digest": "sha256:1"}}
    assert hub["lease"] is None
    assert (hub["paused"], hub["held"]) == (False, False)


def test_one_target_with_its_sync_object(served: Served) -> None:
    good = add_deployment(
        served,
        "registry",
        "succeeded",
        commit="a" * 40,
        images={"web": {"old": None, "new": f"registrycluster.local/library/test:1.0@{D1}"}},
    )
    with served.records.begin() as conn:
        target_records.record_outcome(conn, "registry", 0, current=good, good=good)
        sync_records.ensure(conn, ["registry"])
        sync_records.change(
            conn,
            "registry",
            observed_commit="b" * 40,
            synced_commit="a" * 40,
            observed_images={"registrycluster.local/library/test:1.0": D2},
            newest_tags={"registrycluster.local/library/test": "1.1"},
            last_poll_at=datetime.now(UTC),
            drift=[{"service": "web", "what": "stopped", "detail": "exited (137)"}],
        )
    answer = served.api("GET", "/targets/registry")
    assert answer.status_code == 200, answer.text
    target = answer.json()
    assert (target["name"], target["paused"], target["held"]) == ("registry", False, False)
    assert target["current"]["id"] == good
    sync = target["sync"]
    assert sync["status"] == "drifted"
    assert sync["desired"]["commit"] == "b" * 40
    assert sync["live"]["commit"] == "a" * 40
    assert sync["live"]["images"] == {"registrycluster.local/library/test:1.0": D1}
    assert sync["drift"] == [{"service": "web", "what": "stopped", "detail": "exited (137)"}]
    assert sync["behind"] == [
        f"the branch is at {'b' * 12}, {'a' * 12} runs",
        f"registrycluster.local/library/test:1.0 moved to {D2[:19]}",
        "registrycluster.local/library/test:1.1 is newer than 1.0",
    ]
    assert sync["pending"] is None and sync["degraded"] is None
    assert sync["heals"] == {"count": 0, "limit": 3, "window": 3600.0}
    assert sync["last_poll_at"].endswith("Z") and sync["last_error"] is None
    listed = {t["name"]: t for t in served.api("GET", "/targets").json()["targets"]}
    assert listed["registry"]["sync"]["status"] == "drifted"
    assert listed["hello"]["sync"]["status"] == "unknown"  # never polled, never deployed
    assert served.api("GET", "/targets/ghost").status_code == 404


def test_sync_queues_a_manual_sync_job(served: Served) -> None:
    job = queued_job(served, served.api("POST", "/targets/hello/sync", json={"actor": "ann"}))
    assert (job.target, job.action, job.manual) == ("hello", "sync", True)
    assert (job.trigger.source, job.trigger.actor) == ("api", "ann")
    job = queued_job(served, served.api("POST", "/targets/hello/sync"))  # no body at all
    assert (job.action, job.trigger.actor) == ("sync", "api")
    assert served.api("POST", "/targets/ghost/sync").status_code == 404
    assert served.api("POST", "/targets/hello/sync", content=b"[1]").status_code == 400


def test_repository_urls_lose_their_credentials() -> None:
    assert (
        public_url("https://x-token:s3cr3t@git.example.com:8443/acme/infra.git")
        == "https://git.example.com:8443/acme/infra.git"
    )
    assert public_url("git@github.com:acme/infra.git") == "git@github.com:acme/infra.git"


def test_deployment_history_and_one_record(served: Served) -> None:
    first = add_deployment(served, "diaspora", "failed")
    second = add_deployment(served, "diaspora", "succeeded")
    with served.records.begin() as conn:
        about = notifications.About("deployment", "deployment", second, second, "diaspora")
        history = [{"outcome": "429"}, {"outcome": "ok"}]
        note_id = notifications.create(
            conn, about, "slack", status="delivered", external={"ts": "1.2"}, history=history
        )
        notifications.change(conn, note_id, attempts=2)
    history = served.api("GET", "/deployments", params={"target": "diaspora"}).json()["deployments"]
    assert [d["id"] for d in history] == [second, first]  # newest first
    assert "lease_token" not in history[0]
    [note] = history[0]["notifications"]
    assert (note["channel"], note["status"], note["attempts"]) == ("slack", "delivered", 2)
    assert len(note["history"]) == 2
    assert [
        d["id"]
        for d in served.api(
            "GET", "/deployments", params={"target": "diaspora", "limit": 1}
        ).json()["deployments"]
    ] == [second]
    record = served.api("GET", f"/deployments/{second}").json()
    assert record["status"] == "succeeded"
    assert record["steps"] == [{"name": "sync", "outcome": "ok"}]
    assert record["log"] == "pulled\napplied\n"
    assert record["started_at"].endswith("Z")
    assert record["notifications"][0]["channel"] == "slack"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, 400),
        ({"limit": "201"}, 400),
        ({"limit": "x"}, 400),
        # Digits to str.isdigit, not to int(): a 500 before.
        ({"limit": "\u00b2"}, 400),
        ({"limit": "\u2460"}, 400),
        ({"limit": "1\u00b2"}, 400),
        ({"limit": "\u0661"}, 400),  # an Arabic-Indic one: int() takes it, we do not
        ({"limit": " 5"}, 400),
        ({"limit": "+5"}, 400),
        ({"limit": "5.0"}, 400),
        ({"limit": ""}, 400),
        ({"limit": "9" * 5000}, 400),
        ({"target": "ghost"}, 404),
        ({"limit": "200"}, 200),
        ({"limit": "0007"}, 200),
    ],
)
def test_history_parameters(served: Served, params: dict[str, str], code: int) -> None:
    assert served.api("GET", "/deployments", params=params).status_code == code


def test_unknown_records_are_404(served: Served) -> None:
    assert served.api("GET", "/deployments/d-missing").status_code == 404
    assert served.api("GET", "/events/e-missing").status_code == 404


def test_an_event_shows_the_deployments_it_led_to(served: Served) -> None:
    response = served.api("POST", "/deploy", json={"target": "hello"})
    event_id = response.json()["id"]
    [row] = served.jobs_of(event_id)
    deployment_id = add_deployment(served, "hello", "succeeded")
    with served.records.begin() as conn:
        link_deployment(conn, row["id"], deployment_id)
    shown = served.api("GET", f"/events/{event_id}").json()
    assert shown["kind"] == "deploy"
    assert shown["jobs"][0]["deployment_id"] == deployment_id
    assert shown["deployments"] == [
        {
            "id": deployment_id,
            "target": "hello",
            "status": "succeeded",
            "reason": None,
            "superseded_by": None,
        }
    ]
