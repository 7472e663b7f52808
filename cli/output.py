"""What the CLI prints about a deployment: its steps as they finish, and how it ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def print_steps(steps: Sequence[Mapping[str, Any]], printed: int) -> int:
    """Print the steps that finished since ``printed`` were; return how many are printed."""
    for step in steps[printed:]:
        if step.get("outcome") == "running":
            break
        detail = f" - {step['detail']}" if step.get("detail") else ""
        print(f"  {step['name']:<16} {step['outcome']}{detail}", flush=True)
        printed += 1
    return printed


def print_end(target: str, status: str, reason: str | None) -> None:
    print(f"{target}: {status}" + (f" ({reason})" if reason else ""), flush=True)
