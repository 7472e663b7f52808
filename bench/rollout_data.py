"""The app's data before and after a broken release: was anything lost or left migrated?"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataState:
    schema: str  # storage/schema_version
    db: str  # storage/anythingllm.db (the stand-in's live database: one line per write)
    runtime_env: str  # the bind-mounted runtime .env (holds SIG_KEY)
    documents: dict[str, str]  # relative path -> sha256 of every other file

    @classmethod
    def read(cls, storage: Path, runtime_env: Path) -> DataState:
        documents = {
            str(path.relative_to(storage)): _sha256(path)
            for path in sorted(storage.rglob("*"))
            if path.is_file() and path.name not in {"schema_version", "anythingllm.db"}
        }
        return cls(
            schema=(storage / "schema_version").read_text().strip(),
            db=(storage / "anythingllm.db").read_text(),
            runtime_env=runtime_env.read_text(),
            documents=documents,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def differences(before: DataState, after: DataState, broken_version: str) -> list[str]:
    """How the data after a broken release differs from the data before it; [] if intact.

    The old version keeps appending to its database while it runs, before the release
    and again once it serves, so the database before must be a prefix of the database
    after, and no line may come from the broken version (its migration, its writes).
    """
    problems = []
    if after.schema != before.schema:
        problems.append(f"schema_version {before.schema} -> {after.schema}")
    if not after.db.startswith(before.db):
        problems.append("anythingllm.db lost lines it had before the deployment")
    foreign = [line for line in after.db.splitlines() if f"by {broken_version}" in line]
    foreign += [line for line in after.db.splitlines() if line.startswith(f"{broken_version} ")]
    if foreign:
        problems.append(f"anythingllm.db holds {len(foreign)} line(s) of {broken_version}")
    if after.runtime_env != before.runtime_env:
        problems.append("the runtime .env changed")
    if after.documents != before.documents:
        changed = sorted(
            set(before.documents.items()).symmetric_difference(after.documents.items())
        )
        problems.append(f"{len(changed)} document file(s) differ")
    return problems
