"""Image pins: what a deployment runs with, from Git, earlier pins and new pushes."""

from __future__ import annotations

from typing import Any

from workers.plan import effective_pins

REPO = "registry.test/acme/app"


def config(line: str) -> dict[str, Any]:
    return {"services": {"app": {"image": line}, "db": {"image": "postgres:16"}}}


def hint(tag: str, *, manual: bool = False, digest: str | None = None) -> dict[str, Any]:
    return {"repository": REPO, "tag": tag, "digest": digest, "manual": manual}


def test_a_push_pins_the_service_that_uses_the_repository() -> None:
    pins, notes = effective_pins(config(f"{REPO}:1.0.0"), {}, [hint("1.1.0")], "d1")
    assert pins == {
        "app": {"image_line": f"{REPO}:1.0.0", "ref": f"{REPO}:1.1.0", "deployment": "d1"}
    }
    assert notes == []


def test_a_registry_digest_is_a_hint_but_a_persons_digest_is_kept() -> None:
    digest = "sha256:" + "a" * 64
    pushed, _ = effective_pins(config(f"{REPO}:1.0.0"), {}, [hint("1.1.0", digest=digest)], "d1")
    assert "digest" not in pushed["app"]  # resolved again in the registry
    asked, _ = effective_pins(
        config(f"{REPO}:1.0.0"), {}, [hint("1.1.0", manual=True, digest=digest)], "d1"
    )
    assert asked["app"]["digest"] == digest


def test_a_pin_holds_until_git_changes_the_image_line() -> None:
    pin = {"image_line": f"{REPO}:1.0.0", "ref": f"{REPO}:1.1.0", "digest": "sha256:" + "b" * 64}
    kept, _ = effective_pins(config(f"{REPO}:1.0.0"), {"app": pin}, [], "d2")
    assert kept == {"app": pin}
    dropped, notes = effective_pins(config(f"{REPO}:1.2.0"), {"app": pin}, [], "d2")
    assert dropped == {}
    assert notes == [f"pin on app ({REPO}:1.1.0) dropped: Git changed its image line"]


def test_an_older_version_is_not_followed_automatically_under_semver() -> None:
    pin = {"image_line": f"{REPO}:1.0.0", "ref": f"{REPO}:1.2.0"}
    late, notes = effective_pins(
        config(f"{REPO}:1.0.0"), {"app": pin}, [hint("1.1.0")], "d3", semver=True
    )
    assert late["app"]["ref"] == f"{REPO}:1.2.0"
    assert notes == [f"{REPO}:1.1.0 is older than 1.2.0; not followed"]
    asked, _ = effective_pins(
        config(f"{REPO}:1.0.0"), {"app": pin}, [hint("1.1.0", manual=True)], "d3", semver=True
    )
    assert asked["app"]["ref"] == f"{REPO}:1.1.0"  # a person may go back on purpose


def test_a_push_of_an_image_no_service_uses_is_noted() -> None:
    other = {"repository": "registry.test/acme/other", "tag": "1", "manual": False}
    pins, notes = effective_pins(config(f"{REPO}:1.0.0"), {}, [other], "d4")
    assert pins == {}
    assert "not used by any service" in notes[0]
