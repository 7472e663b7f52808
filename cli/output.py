"""What the CLI prints: tables for people, a deployment's steps as they finish (with a live
"running <step> (12 s)" line on a terminal), and exit codes that scripts can rely on."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

# Exit codes (README, "Exit codes"). A deployment that failed and one that was rolled back
# differ for a script: after a rollback the old version serves again.
OK = 0
FAILED = 1
ROLLED_BACK = 2
USAGE = 3  # bad arguments, an unknown target, settings that are missing or wrong


def exit_code(statuses: Iterable[str]) -> int:
    """The exit code for deployments that ended with these statuses (the worst wins)."""
    seen = set(statuses)
    if seen - {"succeeded", "no_op", "rolled_back"}:
        return FAILED
    return ROLLED_BACK if "rolled_back" in seen else OK


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def _started(step: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(step.get("started_at")))
    except ValueError:
        return None


class Progress:
    """Prints a deployment's steps once they finish. On a terminal, the step that runs
    meanwhile is shown on one line that rewrites itself; in a pipe or a file there is no
    such line, only the finished steps."""

    def __init__(self, out: TextIO | None = None, *, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self._shown = False  # a live line is on screen

    def _clear(self) -> None:
        if self._shown:
            self.out.write("\r\x1b[2K")
            self._shown = False

    def line(self, text: str) -> None:
        self._clear()
        print(text, file=self.out, flush=True)

    def steps(self, steps: Sequence[Mapping[str, Any]], printed: int) -> int:
        """Print the steps that finished since ``printed`` were; return how many are printed."""
        for step in steps[printed:]:
            if step.get("outcome") == "running":
                break
            detail = f" - {step['detail']}" if step.get("detail") else ""
            self.line(f"  {step['name']:<16} {step['outcome']}{detail}")
            printed += 1
        running = next((s for s in steps[printed:] if s.get("outcome") == "running"), None)
        if self.live and running is not None:
            started = _started(running)
            seconds = (datetime.now(UTC) - started).total_seconds() if started else 0.0
            self._clear()
            self.out.write(f"  running {running['name']} ({max(0, int(seconds))} s)")
            self.out.flush()
            self._shown = True
        return printed

    def end(self, target: str, status: str, reason: str | None) -> None:
        self.line(f"{target}: {status}" + (f" ({reason})" if reason else ""))


def print_steps(steps: Sequence[Mapping[str, Any]], printed: int) -> int:
    """Print the steps that finished since ``printed`` were (no live line)."""
    return Progress(live=False).steps(steps, printed)


def print_end(target: str, status: str, reason: str | None) -> None:
    print(f"{target}: {status}" + (f" ({reason})" if reason else ""), flush=True)


def ago(moment: str | None, now: float | None = None) -> str:
    """'3 min ago' for an ISO timestamp; '-' when there is none."""
    if not moment:
        return "-"
    try:
        then = datetime.fromisoformat(moment)
    except ValueError:
        return moment
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int((now or time.time()) - then.timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"
