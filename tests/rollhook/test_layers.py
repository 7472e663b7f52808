"""rollhook/ is the shared base: it never imports the processes' code (service/, workers/)
or the CLI that sits on top of them all."""

from __future__ import annotations

import ast
from pathlib import Path

ROLLHOOK = Path(__file__).resolve().parents[2] / "rollhook"
ABOVE = ("service", "workers", "cli")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_nothing_in_rollhook_imports_the_processes_or_the_cli() -> None:
    files = sorted(ROLLHOOK.rglob("*.py"))
    assert len(files) > 10  # the walk found the package
    offending = {
        f"{path.relative_to(ROLLHOOK.parent)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] in ABOVE
    }
    assert offending == set()
