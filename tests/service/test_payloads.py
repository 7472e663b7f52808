"""Every sample payload through its endpoint, with what it must lead to."""

from __future__ import annotations

import json
from typing import Any

import httpx

from rollhook.jobs import Job
from service.signatures import hub_signature
from tests.service.support import (
    API_TOKEN,
    DOCKERHUB_TOKEN,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    HARBOR_TOKEN,
    REGISTRY_TOKEN,
    Served,
    encode,
    payload,
    raw,
    unique,
)


def jobs(served: Served, response: httpx.Response) -> list[Job]:
    assert response.status_code == 202, response.text
    return [Job.from_json(j["payload"]) for j in served.jobs_of(response.json()["id"])]


def event(served: Served, event_id: str) -> dict[str, Any]:
    shown = served.api("GET", f"/events/{event_id}")
    assert shown.status_code == 200
    document: dict[str, Any] = shown.json()
    return document


def test_github_push(served: Served) -> None:
    response = served.github(raw("github-push.json"), delivery="sample-push")
    [job] = jobs(served, response)
    assert (job.target, job.ref, job.action) == (
        "hello",
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "deploy",
    )
    assert (job.trigger.source, job.trigger.delivery_id, job.trigger.actor) == (
        "github",
        "sample-push",
        "Codertocat",
    )
    assert job.trigger.event_id == response.json()["id"]


def test_github_ping(served: Served) -> None:
    response = served.github(raw("github-ping.json"), event="ping")
    assert response.json() == {"status": "ignored", "reason": "ping"}


def test_github_package_without_a_tag(served: Served) -> None:
    response = served.github(raw("github-package.json"), event="package")
    assert response.status_code == 200
    assert response.json()["reason"] == "untagged manifest"


def test_github_package_with_a_tag(served: Served) -> None:
    doc = payload("github-package.json")
    doc["package"]["package_version"]["container_metadata"]["tag"]["name"] = "2024.05"
    [job] = jobs(served, served.github(encode(doc), event="package"))
    assert job.target == "ghcr"
    assert job.trigger.source == "ghcr"
    assert job.image is not None
    assert (job.image.repository, job.image.tag) == ("ghcr.io/codertocat/hello-world", "2024.05")


def test_gitea_push_with_gitea_headers(served: Served) -> None:
    body = raw("gitea-push.json")
    delivery = unique("gitea")
    headers = {
        "content-type": "application/json",
        "x-gitea-event": "push",
        "x-gitea-delivery": delivery,
        "x-gitea-signature": hub_signature(GITHUB_SECRET.encode(), body).removeprefix("sha256="),
        "x-github-event": "push",
        "x-github-delivery": delivery,
        "x-hub-signature-256": hub_signature(GITHUB_SECRET.encode(), body),
    }
    response = served.client.post("/hooks/github", content=body, headers=headers)
    [job] = jobs(served, response)
    assert (job.target, job.trigger.source) == ("gitea", "gitea")
    assert job.ref == "bffeb74224043ba2feb48d137756c8a9331c449a"
    # The sample carries a deprecated "secret" field: it must not be recorded anywhere.
    shown = json.dumps(event(served, response.json()["id"]))
    assert payload("gitea-push.json")["secret"] not in shown


def test_gitlab_push(served: Served) -> None:
    headers = {
        "content-type": "application/json",
        "x-gitlab-event": "Push Hook",
        "x-gitlab-token": GITLAB_TOKEN,
        "idempotency-key": unique("gl"),
    }
    response = served.client.post("/hooks/gitlab", content=raw("gitlab-push.json"), headers=headers)
    [job] = jobs(served, response)
    assert (job.target, job.ref, job.trigger.actor) == (
        "diaspora",
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "jsmith",
    )
    again = served.client.post("/hooks/gitlab", content=raw("gitlab-push.json"), headers=headers)
    assert again.json()["reason"] == "duplicate delivery"


def post_registry(served: Served, body: bytes, version: str = "v2") -> httpx.Response:
    headers = {
        "authorization": f"Bearer {REGISTRY_TOKEN}",
        "content-type": f"application/vnd.docker.distribution.events.{version}+json",
    }
    return served.client.post("/hooks/registry", content=body, headers=headers)


def test_distribution_sample_without_a_tag(served: Served) -> None:
    response = post_registry(served, raw("distribution-push.json"), "v1")
    assert response.status_code == 200
    assert response.json()["reason"] == "untagged manifest"


def test_distribution_tagged_envelope_gives_one_job_per_target(served: Served) -> None:
    doc = payload("distribution-push.json")
    manifest = doc["events"][0]
    newer = json.loads(json.dumps(manifest)) | {
        "id": unique("n"),
        "timestamp": "2006-01-02T15:04:06Z",
    }
    manifest.update(id=unique("o"))
    manifest["target"]["tag"] = "1.0.0"
    newer["target"].update(tag="1.1.0", digest="sha256:" + "e" * 64)
    doc["events"].append(newer)
    for version in ("v1", "v2"):
        for event_ in doc["events"]:
            event_["id"] = unique(version)
        [job] = jobs(served, post_registry(served, encode(doc), version))
        assert job.target == "registry"
        assert job.image is not None
        assert (job.image.repository, job.image.tag) == (
            "registrycluster.local/library/test",
            "1.1.0",
        )
        assert job.image.digest == "sha256:" + "e" * 64


def test_dockerhub_push_and_its_repeat(served: Served) -> None:
    doc = payload("dockerhub-push.json")
    doc["push_data"]["pushed_at"] = 1417566161 + 1000  # a time of this test's own
    response = served.client.post(
        f"/hooks/dockerhub/{DOCKERHUB_TOKEN}",
        content=encode(doc),
        headers={"content-type": "application/json"},
    )
    [job] = jobs(served, response)
    assert job.target == "hub"
    assert job.image is not None
    assert (job.image.repository, job.image.tag, job.image.digest) == (
        "docker.io/svendowideit/testhook",
        "latest",
        None,
    )
    # A multi-arch push fires identical calls: one event.
    again = served.client.post(
        f"/hooks/dockerhub/{DOCKERHUB_TOKEN}",
        content=encode(doc),
        headers={"content-type": "application/json"},
    )
    assert again.json() == {
        "status": "ignored",
        "reason": "duplicate delivery",
        "id": response.json()["id"],
    }


def test_harbor_default_and_cloudevents(served: Served) -> None:
    response = served.client.post(
        "/hooks/harbor",
        content=raw("harbor-push.json"),
        headers={"authorization": HARBOR_TOKEN, "content-type": "application/json"},
    )
    [job] = jobs(served, response)
    assert job.target == "harbor"
    assert job.trigger.actor == "admin"
    cloud = {
        "specversion": "1.0",
        "id": unique("ce"),
        "type": "harbor.artifact.pushed",
        "source": "/projects/1/webhook/policies/1",
        "time": "2024-05-06T07:08:09Z",
        "operator": "robot",
        "data": payload("harbor-push.json")["event_data"],
    }
    response = served.client.post(
        "/hooks/harbor",
        content=encode(cloud),
        headers={
            "authorization": f"Bearer {HARBOR_TOKEN}",
            "content-type": "application/cloudevents+json",
        },
    )
    [job] = jobs(served, response)
    assert (job.target, job.trigger.actor) == ("harbor", "robot")


def test_the_event_shows_what_it_led_to(served: Served) -> None:
    response = served.github(raw("github-push.json"))
    shown = event(served, response.json()["id"])
    assert shown["source"] == "github"
    assert shown["summary"]["targets"] == ["hello"]
    assert [j["target"] for j in shown["jobs"]] == ["hello"]
    assert shown["deployments"] == []
    assert shown["received_at"].endswith("Z")
    assert API_TOKEN not in json.dumps(shown)
