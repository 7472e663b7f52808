"""What a snapshot holds, mapped onto a target's current sources (workers.backup.contents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.backup import Source
from workers.backup.contents import SnapshotContents, StagedSource, place, target_tags
from workers.errors import OperatorError


def held(name: str, path: str, kind: str = "dir", included_in: str | None = None) -> StagedSource:
    return StagedSource(name, path, path, kind, included_in, 1, 1, ())  # type: ignore[arg-type]


CONTENTS = SnapshotContents(
    "anythingllm",
    "2026-01-01T03:00:00.000+00:00",
    (
        held("volume:anythingllm_storage", "/var/lib/docker/volumes/s/_data"),
        held("bind:/srv/a/.env", "/srv/a/.env", "file"),
        held("bind:/srv/a/hotdir", "/srv/a/hotdir"),
        held("bind:/srv/a/gone", "/srv/a/gone", "missing"),
    ),
)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        # The same host: everything by name.
        (
            [
                Source("volume:anythingllm_storage", Path("/var/lib/docker/volumes/s/_data")),
                Source("bind:/srv/a/.env", Path("/srv/a/.env")),
            ],
            [("name", "/var/lib/docker/volumes/s/_data"), ("name", "/srv/a/.env")],
        ),
        # A new host with another docker data-root: the volume keeps its name.
        (
            [Source("volume:anythingllm_storage", Path("/data/docker/volumes/s/_data"))],
            [("name", "/var/lib/docker/volumes/s/_data")],
        ),
        # A source renamed but at the same configured path.
        ([Source("bind:hotdir", Path("/srv/a/hotdir/"))], [("path", "/srv/a/hotdir")]),
        # Nothing in the snapshot for it.
        ([Source("bind:/srv/b/new", Path("/srv/b/new"))], [(None, None)]),
    ],
)
def test_sources_are_placed_by_name_then_by_path(
    current: list[Source], expected: list[tuple[str | None, str | None]]
) -> None:
    placements, _ = place(CONTENTS, current)
    assert [(p.matched_by, p.held.location if p.held else None) for p in placements] == expected
    assert [p.source for p in placements] == current


def test_origins_lie_in_the_scratch_directory_and_leftovers_are_reported() -> None:
    current = [
        Source("volume:anythingllm_storage", Path("/x")),
        Source("bind:/srv/a/gone", Path("/srv/a/gone")),
    ]
    placements, unused = place(CONTENTS, current)
    scratch = Path("/scratch")
    assert placements[0].origin(scratch) == Path("/scratch/var/lib/docker/volumes/s/_data")
    assert placements[1].origin(scratch) is None  # it was missing when the snapshot was taken
    assert [s.name for s in unused] == ["bind:/srv/a/.env", "bind:/srv/a/hotdir"]


def test_the_manifest_round_trips_and_refuses_locations_outside_the_tree() -> None:
    assert SnapshotContents.from_json(CONTENTS.to_json()) == CONTENTS
    for bad in ("relative/path", "/srv/../../etc", "/srv/./x"):
        data = CONTENTS.to_json()
        data["sources"][0]["location"] = bad
        with pytest.raises(OperatorError, match="bad location"):
            SnapshotContents.from_json(data)
    with pytest.raises(OperatorError, match="not a rollhook snapshot manifest"):
        SnapshotContents.from_json({"target": "x"})


def test_tags_name_the_target_and_paths_without_commas() -> None:
    contents = SnapshotContents("t", "now", (held("a", "/srv/a"), held("b", "/srv/b,c")))
    assert contents.tags() == ["rollhook", "target=t", "path=/srv/a", "size=2"]
    assert target_tags("t") == ["rollhook", "target=t"]
