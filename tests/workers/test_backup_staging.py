"""The stage an off-host snapshot is taken from (workers.backup.staging), on the real filesystem.

Runs as root: owners are set to anything-llm's 1000:1000, and rollhook's guarantees
against a hostile app (no symlink followed out of its data) matter because it is root.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers.sqlite_app import Writer, check_copy, make_database
from workers.backup import Source, UnsafeSymlink
from workers.backup.contents import SnapshotContents
from workers.backup.staging import Stage, Staged
from workers.errors import DeployError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set by root")

SECRET = "SIG_KEY='stage-secret-3c9d1e'"


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, 1000, 1000)
    os.chmod(path, mode)


def make_storage(host: Path) -> tuple[Path, Path]:
    """anything-llm's documented layout: storage/ with the runtime .env inside it."""
    storage = host / "srv" / "anythingllm" / "storage"
    storage.mkdir(parents=True)
    make_database(storage / "anythingllm.db", "DELETE", filler_rows=20)
    table = storage / "lancedb" / "workspace.lance"
    write(table / "_latest.manifest", b"m" * 512)
    write(table / "_versions" / "1.manifest", b"v" * 512)
    write(table / "data" / "0a1b.lance", os.urandom(200_000))
    write(storage / "documents" / "custom-documents" / "doc.json", b'{"pageContent": "hi"}')
    write(storage / "vector-cache" / "abc.json", os.urandom(20_000), mode=0o640)
    (storage / "plugins").mkdir()
    (storage / "plugins" / "docs").symlink_to("../documents")
    env = storage / ".env"
    write(env, f"{SECRET}\n".encode(), mode=0o600)
    return storage, env


def sources_of(storage: Path, env: Path) -> list[Source]:
    return [Source("volume:anythingllm_storage", storage), Source(f"bind:{env}", env)]


def staged_path(staged: Staged, live: Path) -> Path:
    return staged.tree / str(live.resolve()).lstrip("/")


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, mtime and content (or link target) of every entry below root."""
    found: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        rel = str(path.relative_to(root))
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", *meta)
        else:
            found[rel] = ("file", *meta, path.read_bytes())
    return found


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def test_a_stage_mirrors_the_data_at_its_host_paths_with_a_consistent_database(
    tmp_path: Path, writers: list[Writer]
) -> None:
    storage, env = make_storage(tmp_path / "host")
    writer = Writer(storage / "anythingllm.db", "DELETE")
    writers.append(writer)
    writer.commits(at_least=50)
    with Stage(tmp_path / "stage").build("anythingllm", sources_of(storage, env)) as staged:
        copy = staged_path(staged, storage)
        assert check_copy(copy / "anythingllm.db") >= 50
        writer.stop()  # from here on the live data holds still, to compare
        live, mine = describe(storage), describe(copy)
        # The database is the one copied with the online backup, its journal left out; the
        # top directory's mtime moved each time the app's journal came and went.
        for tree in (live, mine):
            for rel in [k for k in tree if k.startswith("anythingllm.db") or k == "."]:
                del tree[rel]
        assert mine == live
        assert sorted(p.name for p in copy.glob("anythingllm.db*")) == ["anythingllm.db"]
        assert (copy / "plugins" / "docs").is_symlink()
        assert (copy / ".env").read_text() == f"{SECRET}\n"

        assert staged.paths == (".rollhook", str(storage.resolve()).lstrip("/"))
        manifest = json.loads((staged.tree / ".rollhook" / "manifest.json").read_text())
        contents = SnapshotContents.from_json(manifest)
        assert contents == staged.contents
        by_name = {s.name: s for s in contents.sources}
        volume = by_name["volume:anythingllm_storage"]
        assert (volume.kind, volume.location, volume.included_in) == ("dir", str(storage), None)
        assert volume.databases == ("anythingllm.db",)
        assert volume.notes == ()
        dotenv = by_name[f"bind:{env}"]
        assert (dotenv.kind, dotenv.included_in) == ("file", "volume:anythingllm_storage")
        assert contents.tags() == [
            "rollhook",
            "target=anythingllm",
            f"path={env}",
            f"path={storage}",
            f"size={volume.bytes}",
        ]
        mode = stat.S_IMODE((tmp_path / "stage").stat().st_mode)
        assert mode == 0o700  # it holds the .env's secrets


def test_unchanged_files_are_linked_from_the_previous_stage_and_live_inodes_untouched(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path / "host")
    stage = Stage(tmp_path / "stage")
    sources = sources_of(storage, env)
    lance = storage / "lancedb" / "workspace.lance" / "data" / "0a1b.lance"
    doc = storage / "documents" / "custom-documents" / "doc.json"
    live_ctimes = {p: p.stat().st_ctime_ns for p in storage.rglob("*") if p.is_file()}
    with stage.build("t", sources) as first:
        inodes = {p: staged_path(first, p).stat().st_ino for p in (lance, doc, env)}
        db_inode = staged_path(first, storage / "anythingllm.db").stat().st_ino
    # Reading for the stage changed nothing about the live files (no link, no write).
    assert {p: p.stat().st_ctime_ns for p in live_ctimes} == live_ctimes
    write(doc, b'{"pageContent": "changed"}')
    with stage.build("t", sources) as second:
        assert staged_path(second, lance).stat().st_ino == inodes[lance]  # linked
        assert staged_path(second, doc).stat().st_ino != inodes[doc]  # changed: copied
        assert staged_path(second, doc).read_bytes() == b'{"pageContent": "changed"}'
        assert staged_path(second, env).stat().st_ino != inodes[env]  # live: always copied
        assert staged_path(second, storage / "anythingllm.db").stat().st_ino != db_inode
    assert sorted(os.listdir(tmp_path / "stage")) == [".lock", "tree"]


def test_a_file_rewritten_in_place_with_size_and_mtime_restored_is_copied_again(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path / "host")
    stage = Stage(tmp_path / "stage")
    lance = storage / "lancedb" / "workspace.lance" / "data" / "0a1b.lance"
    with stage.build("t", sources_of(storage, env)):
        pass
    before = lance.stat()
    fresh = os.urandom(before.st_size)
    with lance.open("r+b") as handle:
        handle.write(fresh)
    os.utime(lance, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime moved
    with stage.build("t", sources_of(storage, env)) as staged:
        assert staged_path(staged, lance).read_bytes() == fresh


def test_symlinks_in_the_data_are_staged_as_links_never_followed(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path / "host")
    (storage / "escape").symlink_to("/etc")
    (storage / "shadow").symlink_to("/etc/shadow")
    os.mkfifo(storage / "pipe")
    with Stage(tmp_path / "stage").build("t", sources_of(storage, env)) as staged:
        copy = staged_path(staged, storage)
        assert os.readlink(copy / "escape") == "/etc"
        assert os.readlink(copy / "shadow") == "/etc/shadow"
        assert not (copy / "pipe").exists()
        volume = next(s for s in staged.contents.sources if s.kind == "dir")
        assert any("pipe" in note for note in volume.notes)
        everything = [p.name for p in staged.tree.rglob("*")]
        assert "passwd" not in everything and "hostname" not in everything


def test_a_symlink_planted_on_the_way_to_a_nested_source_is_refused(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path / "host")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "conf").mkdir()
    (elsewhere / "conf" / "x").write_text("host secret")
    (storage / "conf").symlink_to(elsewhere / "conf")  # the app plants it
    sources = [*sources_of(storage, env), Source("bind:conf", storage / "conf" / "x")]
    with pytest.raises(UnsafeSymlink, match="never follows a symlink there"):
        Stage(tmp_path / "stage").build("t", sources)
    assert not (tmp_path / "stage" / "tree").exists()


def test_a_database_whose_wal_is_a_planted_symlink_is_copied_as_plain_files_with_a_note(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path / "host")
    outside = tmp_path / "outside.db-wal"
    outside.write_bytes(b"host data")
    (storage / "anythingllm.db-wal").symlink_to(outside)
    with Stage(tmp_path / "stage").build("t", sources_of(storage, env)) as staged:
        copy = staged_path(staged, storage)
        assert os.readlink(copy / "anythingllm.db-wal") == str(outside)  # a link, as found
        volume = next(s for s in staged.contents.sources if s.kind == "dir")
        assert volume.databases == ()
        assert any("not with SQLite's online backup" in note for note in volume.notes)
        live = storage / "anythingllm.db"
        assert (copy / "anythingllm.db").read_bytes() == live.read_bytes()


def test_missing_sources_and_a_database_as_a_file_source(tmp_path: Path) -> None:
    data = tmp_path / "host" / "data"
    data.mkdir(parents=True)
    make_database(data / "app.sqlite", "WAL", filler_rows=5)
    sources = [Source("bind:db", data / "app.sqlite"), Source("bind:gone", data / "gone")]
    with Stage(tmp_path / "stage").build("t", sources) as staged:
        by_name = {s.name: s for s in staged.contents.sources}
        assert by_name["bind:gone"].kind == "missing"
        assert by_name["bind:db"].databases == ("app.sqlite",)
        assert check_copy(staged_path(staged, data / "app.sqlite")) == 0
        assert staged.paths == (".rollhook", str(data / "app.sqlite").lstrip("/"))


def test_a_path_configured_twice_is_staged_once(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path / "host")
    (tmp_path / "host" / "link").symlink_to(storage)  # the operator's own link
    sources = [*sources_of(storage, env), Source("bind:again", tmp_path / "host" / "link")]
    with Stage(tmp_path / "stage").build("t", sources) as staged:
        again = next(s for s in staged.contents.sources if s.name == "bind:again")
        assert (again.location, again.included_in) == (str(storage), "volume:anythingllm_storage")
        assert staged.paths == (".rollhook", str(storage).lstrip("/"))


def test_one_build_at_a_time(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path / "host")
    stage = Stage(tmp_path / "stage")
    with stage.build("t", sources_of(storage, env)):
        errors: list[BaseException] = []

        def other() -> None:
            try:
                Stage(tmp_path / "stage").build("t", sources_of(storage, env)).close()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], DeployError)
        assert "being staged by another process" in str(errors[0])
    with stage.build("t", sources_of(storage, env)):  # released
        pass
