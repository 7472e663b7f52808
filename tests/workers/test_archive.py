"""Writing a git archive into a folder: every member inside, never through a link."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from workers.archive import extract
from workers.errors import OperatorError


def _tar(members: list[tuple[str, str, str]]) -> tarfile.TarFile:
    """An in-memory archive of (kind, name, content or link target) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o775
                tar.addfile(info)
            elif kind == "file":
                info.size, info.mode = len(data), 0o4775  # setuid must not survive
                tar.addfile(info, io.BytesIO(data.encode()))
            else:
                info.linkname = data
                kinds = {"link": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}
                info.type = kinds[kind]
                tar.addfile(info)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        ([("file", "/etc/x", "x")], "written outside"),
        ([("file", "../x", "x")], "written outside"),
        ([("dir", "a", ""), ("file", "a/../../x", "x")], "written outside"),
        ([("link", "l", "/etc")], "points outside"),
        ([("dir", "a", ""), ("link", "a/l", "../..")], "points outside"),
        # Each link alone stays inside; resolved together, "b" is the release's parent.
        ([("link", "a", "."), ("link", "b", "a/..")], "link b points outside"),
        ([("link", "a", "."), ("file", "a/x", "x")], "through the link a"),
        ([("file", "x/y", "x")], "not inside a folder"),
        ([("file", "x", "1"), ("file", "x", "2")], "appears twice"),
        ([("file", "x", "1"), ("link", "x", ".")], "appears twice"),
        ([("hard", "h", "/etc/shadow")], "not a file, folder or link"),
        ([("fifo", "f", "")], "not a file, folder or link"),
    ],
)
def test_extraction_keeps_every_member_inside(
    tmp_path: Path, members: list[tuple[str, str, str]], refusal: str
) -> None:
    root = tmp_path / "release"
    root.mkdir()
    with _tar(members) as tar, pytest.raises(OperatorError, match=refusal):
        extract(tar, root, "test", max_files=100, max_bytes=10**6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]


def test_extraction_writes_plain_files_folders_and_inner_links(tmp_path: Path) -> None:
    members = [
        ("dir", "conf", ""),
        ("file", "conf/nginx.conf", "server {}\n"),
        ("link", "current.conf", "conf/nginx.conf"),
        ("dir", "conf/d", ""),
        ("link", "conf/d/up", "../nginx.conf"),
    ]
    root = tmp_path / "release"
    root.mkdir()
    with _tar(members) as tar:
        extract(tar, root, "test", max_files=100, max_bytes=10**6)
    assert (root / "current.conf").read_text() == "server {}\n"
    assert (root / "conf" / "d" / "up").read_text() == "server {}\n"
    assert (root / "conf" / "nginx.conf").stat().st_mode & 0o7777 == 0o755
    assert (root / "conf").stat().st_mode & 0o7777 == 0o755


def test_extraction_is_bounded(tmp_path: Path) -> None:
    members = [("file", f"f{n}", "x" * 10) for n in range(3)]
    for bounds, refusal in (
        ({"max_files": 2, "max_bytes": 100}, "more than 2 files, folders and links"),
        ({"max_files": 3, "max_bytes": 29}, "more than 29 bytes of files"),
    ):
        root = tmp_path / refusal[:12].replace(" ", "-")
        root.mkdir()
        with _tar(members) as tar, pytest.raises(OperatorError, match=refusal):
            extract(tar, root, "test", **bounds)
