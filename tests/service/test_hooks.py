"""Every answer the webhook endpoints give, each for the reason PRODUCT.md names."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text
from starlette.requests import Request

from rollhook.records import targets as target_records
from service.hooks import header_map
from service.signatures import hub_signature
from tests.service.support import (
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

Call = Callable[[Served], httpx.Response]


def push(ref: str = "refs/heads/master", **changes: Any) -> bytes:
    """A signed push body of its own: each real push differs (its commits, its times), and
    the same body twice is one event whatever its delivery id."""
    nonce = {"head_commit": {"id": unique("c"), "timestamp": unique("t")}}
    return encode(payload("github-push.json") | {"ref": ref} | nonce | changes)


def infra_push(changed: list[str]) -> bytes:
    doc = payload("github-push.json")
    doc["repository"].update(
        clone_url="https://github.com/acme/llm-infra.git",
        ssh_url="",
        html_url="",
        git_url="",
        url="",
    )
    doc.update(ref="refs/heads/main", created=False, before="b" * 40)
    doc["commits"][0].update(added=[], removed=[], modified=changed)
    return encode(doc)


def registry_push(repository: str, tag: str) -> bytes:
    event = payload("distribution-push.json")["events"][0]
    event["id"] = unique("ev")
    event["target"].update(repository=repository, tag=tag)
    return encode({"events": [event]})


def registry(body: bytes, token: str = REGISTRY_TOKEN) -> Call:
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/vnd.docker.distribution.events.v2+json",
    }
    return lambda s: s.client.post("/hooks/registry", content=body, headers=headers)


def unsigned(body: bytes, **headers: str) -> Call:
    sent = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": unique("d"),
    }
    sent |= {k.replace("_", "-"): v for k, v in headers.items()}
    return lambda s: s.client.post("/hooks/github", content=body, headers=sent)


CASES: list[tuple[str, Call, int, str | None]] = [
    ("queued", lambda s: s.github(push()), 202, None),
    ("ping", lambda s: s.github(raw("github-ping.json"), event="ping"), 200, "ping"),
    ("another branch", lambda s: s.github(push("refs/heads/develop")), 200, "another branch"),
    ("deleted ref", lambda s: s.github(push(deleted=True, after="0" * 40)), 200, "deleted ref"),
    ("tag push", lambda s: s.github(push("refs/tags/v1.0")), 200, "tag push"),
    ("no path", lambda s: s.github(infra_push(["docs/readme.md"])), 200, "no watched path changed"),
    (
        "path",
        lambda s: s.github(infra_push(["environments/staging/docker-compose.yml"])),
        202,
        None,
    ),
    (
        "unknown repository",
        lambda s: s.github(push(repository={"clone_url": "https://github.com/x/y.git"})),
        200,
        "unknown repository",
    ),
    ("unknown image", registry(registry_push("acme/other", "1.0.0")), 200, "unknown image"),
    (
        "tag outside policy",
        registry(registry_push("library/test", "2.0.0")),
        200,
        "tag outside policy",
    ),
    ("image queued", registry(registry_push("library/test", "1.0.1")), 202, None),
    ("other event", lambda s: s.github(b"{}", event="issues"), 200, "event not handled"),
    ("malformed", lambda s: s.github(b"{not json"), 400, "body is not valid JSON"),
    (
        "no event header",
        lambda s: s.github(push(), x_github_event=""),
        400,
        "missing X-GitHub-Event header",
    ),
    ("unsigned", unsigned(push()), 401, "missing or bad credentials"),
    (
        "bad signature",
        unsigned(push(), x_hub_signature_256=hub_signature(b"nope", push())),
        401,
        None,
    ),
    (
        "sha1 only",
        unsigned(push(), x_hub_signature="sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"),
        401,
        "X-Hub-Signature-256 required; SHA-1 signatures are refused",
    ),
    (
        "gitlab token",
        lambda s: s.client.post(
            "/hooks/gitlab",
            content=raw("gitlab-push.json"),
            headers={"x-gitlab-token": GITLAB_TOKEN + "x", "x-gitlab-event": "Push Hook"},
        ),
        401,
        None,
    ),
    ("registry token", registry(registry_push("library/test", "1.0.1"), token="wrong"), 401, None),
    (
        "dockerhub token",
        lambda s: s.client.post("/hooks/dockerhub/wrong", content=raw("dockerhub-push.json")),
        401,
        None,
    ),
    (
        "harbor auth",
        lambda s: s.client.post(
            "/hooks/harbor", content=raw("harbor-push.json"), headers={"authorization": "x"}
        ),
        401,
        None,
    ),
    ("content type", lambda s: s.github(push(), content_type="text/plain"), 415, None),
    (
        "auth before content type",
        unsigned(push(), content_type="text/plain"),
        401,
        None,
    ),
    (
        "auth before headers",
        lambda s: s.client.post("/hooks/gitlab", content=b"{}", headers={"x-gitlab-token": "bad"}),
        401,
        None,
    ),
    ("no such path", lambda s: s.client.post("/hooks/bitbucket", content=b"{}"), 404, None),
    ("wrong method", lambda s: s.client.get("/hooks/github"), 405, None),
]


@pytest.mark.parametrize(("name", "call", "code", "reason"), CASES, ids=[c[0] for c in CASES])
def test_answers(  # noqa: PLR0917 - fixtures and the table's columns
    served: Served,
    caplog: pytest.LogCaptureFixture,
    name: str,
    call: Call,
    code: int,
    reason: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    response = call(served)
    assert response.status_code == code, response.text
    # One line per webhook, with its answer (what never reached a hook endpoint has none).
    lines = [r.getMessage() for r in caplog.records if r.name == "rollhook.hooks"]
    if name in {"no such path", "wrong method"}:
        assert lines == []
    else:
        assert len(lines) == 1
        assert f"] {code} from 127.0.0.1: " in lines[0]
    document = response.json()
    expected_status = {202: "queued", 200: "ignored"}.get(code)
    if expected_status:
        assert document["status"] == expected_status
    if reason is not None:
        assert document["reason"] == reason
    if code == 401:
        # Never a hint at what was expected.
        assert GITHUB_SECRET not in response.text
        assert document["reason"] in {
            "missing or bad credentials",
            "X-Hub-Signature-256 required; SHA-1 signatures are refused",
        }


def test_headers_are_read_once_first_value_wins() -> None:
    request = Request(
        {
            "type": "http",
            "headers": [
                (b"x-github-event", b"push"),
                (b"x-github-event", b"ping"),
                (b"a", b"\xe9"),
            ],
        }
    )
    assert header_map(request) == {"x-github-event": "push", "a": "é"}
    assert header_map(request)["x-github-event"] == request.headers["x-github-event"]


def test_queued_means_committed(served: Served) -> None:
    """The 202 comes after the commit: a fresh connection sees the event and its job."""
    response = served.github(push())
    assert response.status_code == 202
    event_id = response.json()["id"]
    [job] = served.jobs_of(event_id)
    assert job["target"] == "hello"
    assert '"ref":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"' in job["payload"]


def test_replay_is_one_event(served: Served) -> None:
    before = served.event_count()
    first = served.github(push(), delivery="replayed-delivery")
    second = served.github(push(), delivery="replayed-delivery")
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {
        "status": "ignored",
        "reason": "duplicate delivery",
        "id": first.json()["id"],
    }
    assert served.event_count() == before + 1


def test_form_encoded_github_body(served: Served) -> None:
    body = urlencode({"payload": push().decode()}).encode()
    response = served.github(body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.text


def test_unconfigured_sources_do_not_exist(serve: Callable[..., Served]) -> None:
    app = serve(
        github_secret=None,
        gitlab_token=None,
        registry_token=None,
        dockerhub_token=None,
        harbor_token=None,
    )
    for path in (
        "/hooks/github",
        "/hooks/gitlab",
        "/hooks/registry",
        f"/hooks/dockerhub/{DOCKERHUB_TOKEN}",
        "/hooks/harbor",
    ):
        response = app.client.post(
            path, content=b"{}", headers={"authorization": f"Bearer {HARBOR_TOKEN}"}
        )
        assert response.status_code == 404, path
        assert response.json()["status"] == "not_found"


def test_paused_target_answers_200(serve: Callable[..., Served]) -> None:
    app = serve()
    body = encode(
        payload("github-push.json")
        | {"ref": "refs/heads/main"}
        | {"repository": {"clone_url": "https://github.com/acme/frozen.git"}}
    )
    assert app.api("POST", "/targets/frozen/pause", json={"reason": "incident"}).status_code == 200
    before = app.event_count()
    paused = app.github(body)
    assert paused.status_code == 200
    assert paused.json()["reason"] == "target paused"
    assert app.event_count() == before
    assert app.api("POST", "/targets/frozen/resume").status_code == 200
    assert app.github(body).status_code == 202


def test_store_failure_is_503(serve: Callable[..., Served]) -> None:
    app = serve()
    with app.records.begin() as conn:
        conn.execute(text("DROP TABLE jobs"))
        conn.execute(text("DROP TABLE events"))
    response = app.github(push())
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert app.client.get("/healthz").status_code == 200


def test_absent_and_unconfigured_endpoints_look_the_same(serve: Callable[..., Served]) -> None:
    app = serve(gitlab_token=None)
    unconfigured = app.client.post("/hooks/gitlab", content=b"{}")
    absent = app.client.post("/hooks/nothing-here", content=b"{}")
    assert (unconfigured.status_code, unconfigured.json()) == (absent.status_code, absent.json())
    wrong_method = app.client.get("/hooks/github")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


def package(tag: str, digest: str) -> bytes:
    doc = payload("github-package.json")
    doc["package"]["package_version"]["container_metadata"]["tag"].update(name=tag, digest=digest)
    return encode(doc)


def test_a_replayed_package_event_cannot_pin_an_older_image(serve: Callable[..., Served]) -> None:
    """The delivery id is not signed: a signed body sent again under a fresh id (or with
    Gitea's headers) is the first event again, so it queues no job that would pin 1.0."""
    app = serve()
    older = package("1.0", "sha256:" + "a" * 64)
    first = app.github(older, event="package")
    assert first.status_code == 202, first.text
    assert app.github(package("1.1", "sha256:" + "b" * 64), event="package").status_code == 202
    before = app.event_count()

    replays = [
        app.github(older, event="package", delivery=unique("attacker")),
        app.github(older, event="package", x_gitea_event="package", x_gitea_delivery="g-1"),
    ]
    for replay in replays:
        assert replay.status_code == 200, replay.text
        assert replay.json() == {
            "status": "ignored",
            "reason": "duplicate delivery",
            "id": first.json()["id"],
        }
    assert app.event_count() == before  # no event, so no job, so no pin


def test_a_replayed_push_cannot_clear_a_manual_rollbacks_hold(
    serve: Callable[..., Served],
) -> None:
    app = serve()
    body = push()
    assert app.github(body).status_code == 202
    with app.records.begin() as conn:  # as a manual rollback leaves the target
        target_records.set_held(conn, "hello", True)

    for headers in ({}, {"x_gitea_event": "push", "x_gitea_delivery": unique("g")}):
        replay = app.github(body, delivery=unique("attacker"), **headers)
        assert replay.json()["reason"] == "duplicate delivery"
    with app.records.connect() as conn:
        assert target_records.get(conn, "hello").held is True

    # A genuinely new push (another signed body) still lets the target deploy again.
    assert app.github(push(after="c" * 40)).status_code == 202
    with app.records.connect() as conn:
        assert target_records.get(conn, "hello").held is False
