"""The source parsers: what each sender's payload means, from the documented examples."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any
from urllib.parse import urlencode

import pytest

from service.sources import (
    GitPush,
    Hints,
    Ignored,
    ImagePush,
    Malformed,
    dockerhub,
    github,
    gitlab,
    harbor,
    load_json,
    registry,
)
from tests.service.support import encode, payload, raw

GH = {"x-github-event": "push", "x-github-delivery": "d-1"}


def hints(parsed: Hints | Ignored) -> Hints:
    assert isinstance(parsed, Hints), parsed
    return parsed


def only_push(parsed: Hints | Ignored) -> Any:
    pushes = hints(parsed).pushes
    assert len(pushes) == 1
    return pushes[0]


# -- GitHub and Gitea ---------------------------------------------------------------------


def test_github_push_names_repository_branch_and_head() -> None:
    parsed = hints(github.parse(GH, raw("github-push.json")))
    push = parsed.pushes[0]
    assert isinstance(push, GitPush)
    assert push.branch == "master"
    assert push.after == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert "github.com/codertocat/hello-world" in push.repo_keys
    assert (parsed.source, parsed.delivery_id, parsed.dedup_key) == ("github", "d-1", "github:d-1")
    assert parsed.actor == "Codertocat"
    # A new branch: its commits list does not say what changed against the deployed one.
    assert push.changed is None


def complete_push(**changes: Any) -> dict[str, Any]:
    """The sample push turned into an ordinary push to an existing branch."""
    doc = payload("github-push.json")
    doc.update({"created": False, "before": "a" * 40} | changes)
    return doc


def test_github_complete_lists_give_the_changed_paths() -> None:
    doc = complete_push()
    doc["commits"][0].update(added=["a.txt"], removed=["b/c.yml"], modified=["d"])
    push = only_push(github.parse(GH, encode(doc)))
    assert push.changed == frozenset({"a.txt", "b/c.yml", "d"})


@pytest.mark.parametrize(
    "change",
    [
        {"forced": True},
        {"created": True},
        {"commits": []},
        {
            "commits": [{"id": "f" * 40, "added": [], "removed": [], "modified": ["x"]}]
        },  # head missing
        {"total_commits": 40},  # Gitea says the list was cut
    ],
)
def test_github_unsure_file_lists_are_none(change: dict[str, Any]) -> None:
    push = only_push(github.parse(GH, encode(complete_push(**change))))
    assert push.changed is None


def test_github_push_of_2048_commits_is_treated_as_truncated() -> None:
    doc = complete_push()
    head = doc["commits"][0]
    doc["commits"] = [dict(head, id=f"{i:040x}") for i in range(2047)] + [head]
    assert only_push(github.parse(GH, encode(doc))).changed is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ref": "refs/tags/v1.2.3"}, "tag push"),
        ({"deleted": True, "after": "0" * 40}, "deleted ref"),
        ({"after": "0" * 40}, "deleted ref"),
        ({"ref": "refs/notes/commits"}, "not a branch"),
    ],
)
def test_github_pushes_that_are_not_deployable(change: dict[str, Any], reason: str) -> None:
    doc = payload("github-push.json") | change
    parsed = github.parse(GH, encode(doc))
    assert isinstance(parsed, Ignored)
    assert parsed.reason == reason


def test_github_ping_and_other_events() -> None:
    assert github.parse(GH | {"x-github-event": "ping"}, raw("github-ping.json")) == Ignored("ping")
    other = github.parse(GH | {"x-github-event": "issues"}, b"{}")
    assert isinstance(other, Ignored)
    assert other.reason == "event not handled"


def test_github_form_encoded_body() -> None:
    body = urlencode({"payload": raw("github-push.json").decode()}).encode()
    push = only_push(github.parse(GH, body, github.FORM))
    assert push.after == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


@pytest.mark.parametrize(
    ("headers", "body", "content_type"),
    [
        ({"x-github-delivery": "d"}, b"{}", "application/json"),  # no event header
        ({"x-github-event": "push"}, b"{}", "application/json"),  # no delivery header
        (GH, b"{not json", "application/json"),
        (GH, b"[1, 2]", "application/json"),
        (GH, b'{"ref": "refs/heads/main"}', "application/json"),
        (GH, b"other=1", github.FORM),
        (GH, b"\xff\xfe", github.FORM),
    ],
)
def test_github_malformed(headers: dict[str, str], body: bytes, content_type: str) -> None:
    with pytest.raises(Malformed):
        github.parse(headers, body, content_type)


def test_gitea_push_by_its_own_headers() -> None:
    headers = {"x-gitea-event": "push", "x-gitea-delivery": "g-1"}
    parsed = hints(github.parse(headers, raw("gitea-push.json")))
    push = parsed.pushes[0]
    assert parsed.source == "gitea"
    assert parsed.dedup_key == "gitea:g-1"
    assert isinstance(push, GitPush)
    assert push.branch == "develop"
    assert "localhost:3000/gitea/webhooks" in push.repo_keys
    assert push.changed is None  # Gitea lists no files in this sample


def test_gitea_push_with_github_compatible_headers() -> None:
    headers = {"x-github-event": "push", "x-github-delivery": "g-2", "x-gitea-delivery": "g-2"}
    assert hints(github.parse(headers, raw("gitea-push.json"))).source == "gitea"


def test_signed_bodies_carry_their_hash_as_a_second_key() -> None:
    """The delivery id is not signed: the body's hash is the key a replay cannot change,
    the same under GitHub's and Gitea's headers. Unsigned sources have none."""
    body = raw("gitea-push.json")
    key = "body:sha256:" + hashlib.sha256(body).hexdigest()
    as_github = hints(github.parse({"x-github-event": "push", "x-github-delivery": "1"}, body))
    as_gitea = hints(github.parse({"x-gitea-event": "push", "x-gitea-delivery": "2"}, body))
    assert (as_github.body_key, as_gitea.body_key) == (key, key)
    assert as_github.dedup_key != as_gitea.dedup_key
    ghcr = github.parse(GH | {"x-github-event": "package"}, encode(package_event("1.0")))
    assert hints(ghcr).body_key is not None
    assert hints(gitlab.parse(GL, raw("gitlab-push.json"))).body_key is None


def package_event(tag: str, event: str = "package") -> dict[str, Any]:
    doc = payload("github-package.json")
    if event == "registry_package":
        doc["registry_package"] = doc.pop("package")
    doc[event]["package_version"]["container_metadata"]["tag"]["name"] = tag
    return doc


def test_github_package_sample_is_an_untagged_manifest() -> None:
    parsed = github.parse(GH | {"x-github-event": "package"}, raw("github-package.json"))
    assert parsed == Ignored("untagged manifest")


@pytest.mark.parametrize("event", ["package", "registry_package"])
def test_ghcr_tagged_push(event: str) -> None:
    body = encode(package_event("1.4.0", event))
    parsed = hints(github.parse(GH | {"x-github-event": event}, body))
    push = parsed.pushes[0]
    assert parsed.source == "ghcr"
    assert isinstance(push, ImagePush)
    assert push.image.name == "ghcr.io/codertocat/hello-world"
    assert push.tag == "1.4.0"
    assert push.digest == "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"


def test_ghcr_other_actions_and_packages_are_ignored() -> None:
    doc = package_event("1.0") | {"action": "deleted"}
    assert isinstance(github.parse(GH | {"x-github-event": "package"}, encode(doc)), Ignored)
    npm = package_event("1.0")
    npm["package"]["package_type"] = "npm"
    del npm["package"]["package_version"]["container_metadata"]
    parsed = github.parse(GH | {"x-github-event": "package"}, encode(npm))
    assert parsed == Ignored("not a container package", "npm")


# -- GitLab -------------------------------------------------------------------------------

GL = {"x-gitlab-event": "Push Hook", "idempotency-key": "k-1"}


def test_gitlab_sample_push() -> None:
    parsed = hints(gitlab.parse(GL, raw("gitlab-push.json")))
    push = parsed.pushes[0]
    assert isinstance(push, GitPush)
    assert (parsed.dedup_key, parsed.actor) == ("gitlab:k-1", "jsmith")
    assert push.branch == "master"
    assert push.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert {"example.com/mike/diaspora"} == push.repo_keys
    # 2 commits listed of 4 pushed: the lists are incomplete.
    assert push.changed is None


def test_gitlab_complete_lists_and_delivery_fallbacks() -> None:
    doc = payload("gitlab-push.json") | {"total_commits_count": 2}
    push = only_push(gitlab.parse(GL, encode(doc)))
    assert push.changed == frozenset({"CHANGELOG", "app/controller/application.rb"})
    by_uuid = hints(
        gitlab.parse({"x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "u"}, encode(doc))
    )
    assert by_uuid.dedup_key == "gitlab:u"
    anonymous = hints(gitlab.parse({"x-gitlab-event": "Push Hook"}, encode(doc)))
    again = hints(gitlab.parse({"x-gitlab-event": "Push Hook"}, encode(doc)))
    assert anonymous.dedup_key == again.dedup_key  # the same push is the same event


@pytest.mark.parametrize(
    ("headers", "change", "reason"),
    [
        ({"x-gitlab-event": "Tag Push Hook"}, {}, "tag push"),
        ({"x-gitlab-event": "Issue Hook"}, {}, "event not handled"),
        (GL, {"after": "0" * 40}, "deleted ref"),
        (GL, {"ref": "refs/tags/v1"}, "tag push"),
    ],
)
def test_gitlab_ignored(headers: dict[str, str], change: dict[str, Any], reason: str) -> None:
    parsed = gitlab.parse(headers, encode(payload("gitlab-push.json") | change))
    assert isinstance(parsed, Ignored)
    assert parsed.reason == reason


def test_gitlab_malformed() -> None:
    with pytest.raises(Malformed):
        gitlab.parse({}, raw("gitlab-push.json"))  # X-Gitlab-Event is required
    with pytest.raises(Malformed):
        gitlab.parse(GL, b'{"ref": 1}')


# -- CNCF Distribution --------------------------------------------------------------------


def test_distribution_sample_has_no_tag() -> None:
    assert registry.parse({}, raw("distribution-push.json")) == Ignored("untagged manifest")


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def manifest_push(
    tag: str | None, *, ident: str = "ev-1", when: str = "2024-01-02T03:04:05Z", **target: Any
) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(payload("distribution-push.json")["events"][0])
    event.update(id=ident, timestamp=when)
    if tag is not None:
        event["target"]["tag"] = tag
    event["target"].update(target)
    return event


def test_distribution_tagged_manifest_push() -> None:
    parsed = hints(registry.parse({}, envelope(manifest_push("1.2.0"))))
    push = parsed.pushes[0]
    assert isinstance(push, ImagePush)
    assert push.image.name == "registrycluster.local/library/test"
    assert (push.tag, push.digest) == (
        "1.2.0",
        "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
    )
    assert (parsed.dedup_key, parsed.actor) == ("registry:ev-1", "test-actor")


def test_distribution_ignores_layers_pulls_mounts_and_deletes() -> None:
    layer = payload("distribution-push.json")["events"][1]
    pull = manifest_push("1.0") | {"action": "pull"}
    mount = manifest_push("1.0") | {"action": "mount"}
    delete = manifest_push("1.0") | {"action": "delete"}
    parsed = registry.parse({}, envelope(layer, pull, mount, delete))
    assert isinstance(parsed, Ignored)
    assert parsed.reason == "no manifest push"


def test_distribution_envelope_with_several_pushes() -> None:
    older = manifest_push("1.1.0", ident="a", when="2024-01-02T03:04:05.5Z")
    newer = manifest_push("1.2.0", ident="b", when="2024-01-02T03:04:05.123456789Z")
    oldest = manifest_push("1.0.0", ident="c", when="2024-01-02T03:04:05Z")
    parsed = hints(registry.parse({}, envelope(older, newer, oldest)))
    assert [p.tag for p in parsed.pushes if isinstance(p, ImagePush)] == ["1.1.0", "1.2.0", "1.0.0"]
    orders = sorted((p.order, p.tag) for p in parsed.pushes if isinstance(p, ImagePush))
    assert [tag for _, tag in orders] == ["1.0.0", "1.2.0", "1.1.0"]
    assert parsed.dedup_key == "registry:a:b:c"


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ],
)
def test_distribution_manifest_media_types(media_type: str) -> None:
    assert isinstance(
        registry.parse({}, envelope(manifest_push("1.0", mediaType=media_type))), Hints
    )


def test_distribution_host_without_a_dot_is_kept() -> None:
    event = manifest_push("1.0")
    event["request"]["host"] = "registry:5000"
    assert only_push(registry.parse({}, envelope(event))).image.name == "registry:5000/library/test"


@pytest.mark.parametrize("body", [b"{}", b'{"events": {}}', b'{"events": [1]}', b"nope"])
def test_distribution_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        registry.parse({}, body)


# -- Docker Hub and Harbor ----------------------------------------------------------------


def test_dockerhub_sample_push() -> None:
    parsed = hints(dockerhub.parse({}, raw("dockerhub-push.json")))
    push = parsed.pushes[0]
    assert isinstance(push, ImagePush)
    assert (push.image.name, push.tag, push.digest) == (
        "docker.io/svendowideit/testhook",
        "latest",
        None,
    )
    assert parsed.dedup_key == "dockerhub:svendowideit/testhook:latest:1417566161"
    assert parsed.actor == "trustedbuilder"


def test_dockerhub_official_image_and_malformed() -> None:
    doc = payload("dockerhub-push.json")
    doc["repository"]["repo_name"] = "ubuntu"
    assert only_push(dockerhub.parse({}, encode(doc))).image.name == "docker.io/library/ubuntu"
    del doc["push_data"]
    with pytest.raises(Malformed):
        dockerhub.parse({}, encode(doc))


def test_harbor_default_format() -> None:
    parsed = hints(harbor.parse({}, raw("harbor-push.json")))
    push = parsed.pushes[0]
    assert isinstance(push, ImagePush)
    assert (push.image.name, push.tag) == ("hub.harbor.com/test-webhook/debian", "latest")
    assert push.digest == "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8"
    assert parsed.actor == "admin"
    assert parsed.dedup_key == hints(harbor.parse({}, raw("harbor-push.json"))).dedup_key


def cloudevent(kind: str = "harbor.artifact.pushed") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "4b2d8b1e",
        "source": "/projects/1/webhook/policies/2",
        "type": kind,
        "time": "2024-05-06T07:08:09Z",
        "operator": "robot$ci",
        "data": payload("harbor-push.json")["event_data"],
    }


def test_harbor_cloudevents_format() -> None:
    parsed = hints(harbor.parse({}, encode(cloudevent()), harbor.CLOUDEVENTS))
    assert only_push(parsed).tag == "latest"
    assert parsed.actor == "robot$ci"


def test_harbor_other_events_and_digest_only_pushes() -> None:
    assert isinstance(
        harbor.parse({}, encode(cloudevent("harbor.artifact.pulled")), harbor.CLOUDEVENTS), Ignored
    )
    pulled = payload("harbor-push.json") | {"type": "PULL_ARTIFACT"}
    assert harbor.parse({}, encode(pulled)) == Ignored("event not handled", "PULL_ARTIFACT")
    by_digest = payload("harbor-push.json")
    resource = by_digest["event_data"]["resources"][0]
    resource["tag"] = resource["digest"]
    assert harbor.parse({}, encode(by_digest)) == Ignored("untagged manifest")


def test_harbor_malformed() -> None:
    doc = payload("harbor-push.json")
    doc["event_data"]["resources"][0]["resource_url"] = "no-host"
    with pytest.raises(Malformed):
        harbor.parse({}, encode(doc))


# -- JSON bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": [1, "x", null, true]}', {"a": [1, "x", None, True]}),
        # What orjson refuses and the standard library takes parses as it always did.
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a UTF-8 byte order mark
        ('{"a": "\u00e9"}'.encode("utf-16"), {"a": "\u00e9"}),
        (b'{"a": "\\ud800"}', {"a": "\ud800"}),  # a lone surrogate
        (b'{"a": 18446744073709551615}', {"a": 18446744073709551615}),  # u64 stays an int
    ],
)
def test_json_bodies(body: bytes, expected: dict[str, Any]) -> None:
    assert load_json(body) == expected


def test_json_nan_parses_as_before() -> None:
    assert math.isnan(load_json(b'{"a": NaN}')["a"])


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"a": 1', b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
def test_json_bodies_refused(body: bytes) -> None:
    with pytest.raises(Malformed):
        load_json(body)
