"""Figures from the rollout benchmark's measurements: medians, goals, a table for the README."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.rollout_arms import Crash, Upgrade

ARMS = ("rollhook", "script")
PROBE_INTERVAL = 0.05  # 20 Hz: the resolution of every downtime figure


@dataclass
class Results:
    sizes: dict[str, str]  # key -> label ("10mb" -> "10 MB")
    pull: list[float] = field(default_factory=list)  # bare pulls of fresh images
    upgrades: dict[tuple[str, str], list[Upgrade]] = field(default_factory=dict)
    crashes: dict[str, list[Crash]] = field(default_factory=dict)
    first_backup: dict[str, float] = field(default_factory=dict)  # size -> pass 1 seconds
    crash_wait: float = 0.0
    machine: str = ""

    def overhead(self, upgrade: Upgrade) -> float:
        """Push-to-healthy minus what any update must spend: pull, stop, boot."""
        pull = statistics.median(self.pull)
        return upgrade.push_to_healthy - pull - upgrade.stop - upgrade.boot

    def values(self, arm: str, size: str, what: Callable[[Upgrade], float]) -> list[float]:
        return [what(u) for u in self.upgrades.get((arm, size), [])]


def s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def med_max(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f} s"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the sections -----------------------------------------------------------------------------


def upgrade_table(results: Results) -> list[str]:
    rows = [
        ("push-to-healthy", lambda u: u.push_to_healthy),
        ("downtime (longest non-200 at 20 Hz)", lambda u: u.downtime),
        ("  old: SIGTERM -> exit (engine)", lambda u: u.stop),
        ("  old exit -> new start (engine)", lambda u: u.between),
        ("  new: start -> first 200 (boot)", lambda u: u.boot),
        ("overhead beyond pull+stop+boot", results.overhead),
    ]
    columns = [(arm, size) for size in results.sizes for arm in ARMS]
    header = f"{'median / max':<38}" + "".join(
        f"{arm + ' ' + results.sizes[size]:>22}" for arm, size in columns
    )
    lines = [header, "-" * len(header)]
    for label, what in rows:
        cells = "".join(f"{med_max(results.values(a, z, what)):>22}" for a, z in columns)
        lines.append(f"{label:<38}{cells}")
    return lines


def step_table(results: Results) -> list[str]:
    """Where rollhook's and the script's time goes (medians), next to the bare pull."""
    lines = [
        f"bare pull of a fresh image by digest: {med_max(results.pull)} "
        f"(median / max of {len(results.pull)})"
    ]
    for size, label in results.sizes.items():
        for arm in ARMS:
            upgrades = results.upgrades.get((arm, size), [])
            names = list(dict.fromkeys(n for u in upgrades for n in u.steps))
            parts = [f"{n} {_median([u.steps.get(n, 0.0) for u in upgrades]):.2f}" for n in names]
            lines.append(f"{arm} {label}: " + ", ".join(parts))
            names = list(dict.fromkeys(n for u in upgrades for n in u.handover))
            parts = [f"{n} {_median([u.handover[n] for u in upgrades]):.2f}" for n in names]
            lines.append("  handover (old exit -> new start): " + ", ".join(parts))
    return lines


def crash_lines(results: Results) -> list[str]:
    lines = []
    for crash in results.crashes.get("rollhook", []):
        lines.append(
            f"rollhook: {crash.outcome}; detected {s(crash.detected_after)} after the crash; "
            f"old version serving {s(crash.recovered_after)} after detection "
            f"(its boot {s(crash.old_boot)}); downtime {s(crash.downtime)}; "
            f"data {'intact' if not crash.problems else '; '.join(crash.problems)}"
        )
    for crash in results.crashes.get("script", []):
        lines.append(
            f"script: {crash.outcome}; failure never detected; old version serving: "
            f"{s(crash.recovered_after)} (waited {crash.waited:.0f} s); "
            f"data {'intact' if not crash.problems else '; '.join(crash.problems)}"
        )
    return lines


MET, NOT_MET = "met", "NOT MET"


@dataclass(frozen=True)
class Goal:
    text: str
    figure: str
    verdict: str  # MET, NOT_MET, or a qualified verdict that says what holds


def _verdict(ok: bool) -> str:
    return MET if ok else NOT_MET


def _overhead_goals(results: Results) -> list[Goal]:
    found = []
    for size, label in results.sizes.items():
        overheads = results.values("rollhook", size, results.overhead)
        median, worst = _median(overheads), max(overheads)
        verdict = _verdict(worst < 1.0)
        if median < 1.0 <= worst:
            verdict = "met by the median, not by every run"
        found.append(
            Goal(
                f"overhead beyond pull, stop and boot < 1 s ({label})",
                f"median {median:.2f} s, max {worst:.2f} s",
                verdict,
            )
        )
    return found


def _downtime_goals(results: Results) -> list[Goal]:
    found = []
    for size, label in results.sizes.items():

        def both(what: Callable[[Upgrade], float], size: str = size) -> tuple[float, float]:
            return (
                _median(results.values("rollhook", size, what)),
                _median(results.values("script", size, what)),
            )

        ours, theirs = both(lambda u: u.downtime)
        # The prober sees the app every 50 ms; the engine's timestamps show the part of
        # the outage that the deployer controls (SIGTERM to the old container -> the
        # new one's start) to the millisecond.
        handover = both(lambda u: u.stop + u.between)
        ticks = round((ours - theirs) / PROBE_INTERVAL)
        verdict = _verdict(ticks <= 0)
        if ticks == 1:
            verdict = "equal within the prober's resolution (one 50 ms probe longer)"
        found.append(
            Goal(
                f"downtime no worse than the script's ({label})",
                f"{ours:.2f} s vs {theirs:.2f} s (medians); engine handover, SIGTERM -> "
                f"new start: {handover[0]:.2f} s vs {handover[1]:.2f} s",
                verdict,
            )
        )
    small, *_, large = results.sizes
    growth = _median(results.values("rollhook", large, lambda u: u.downtime)) - _median(
        results.values("rollhook", small, lambda u: u.downtime)
    )
    found.append(
        Goal(
            f"downtime grows < 1 s from {results.sizes[small]} to {results.sizes[large]}",
            f"{growth:+.2f} s (medians)",
            _verdict(growth < 1.0),
        )
    )
    return found


def _crash_goals(results: Results) -> list[Goal]:
    crashes = results.crashes.get("rollhook", [])
    detected = [c.detected_after for c in crashes]
    known = [d for d in detected if d is not None]
    margins = [
        c.recovered_after - c.old_boot
        for c in crashes
        if c.recovered_after is not None and c.old_boot is not None
    ]
    return [
        Goal(
            "a crash on boot detected within 5 s",
            f"max {s(max(known, default=None))}" + ("" if len(known) == len(detected) else "+"),
            _verdict(bool(crashes) and len(known) == len(detected) and max(known) < 5.0),
        ),
        Goal(
            "old version serving within its boot + 5 s after detection",
            f"at most {max(margins, default=float('nan')):.2f} s beyond its boot",
            _verdict(bool(crashes) and len(margins) == len(crashes) and max(margins) < 5.0),
        ),
        Goal(
            "no data lost on a broken release",
            f"{sum(not c.problems for c in crashes)} of {len(crashes)} intact",
            _verdict(bool(crashes) and all(not c.problems for c in crashes)),
        ),
    ]


def goals(results: Results) -> list[Goal]:
    return [*_overhead_goals(results), *_downtime_goals(results), *_crash_goals(results)]


def goal_lines(found: list[Goal]) -> list[str]:
    return [f"[{g.verdict}] {g.text}: {g.figure}" for g in found]


def markdown(results: Results, found: list[Goal], boot_delay: float) -> list[str]:
    columns = [(arm, size) for size in results.sizes for arm in ARMS]
    head = (
        "| median (max) | "
        + " | ".join(f"{arm}, {results.sizes[size]}" for arm, size in columns)
        + " |"
    )
    lines = [head, "|---" * (len(columns) + 1) + "|"]

    def row(label: str, what: Callable[[Upgrade], float]) -> str:
        cells = []
        for arm, size in columns:
            values = results.values(arm, size, what)
            cells.append(f"{_median(values):.2f} s ({max(values):.2f})" if values else "-")
        return f"| {label} | " + " | ".join(cells) + " |"

    lines.append(row("push to healthy", lambda u: u.push_to_healthy))
    lines.append(row("downtime (20 Hz prober)", lambda u: u.downtime))
    lines.append(row("overhead beyond pull + stop + boot", results.overhead))
    ours, theirs = results.crashes.get("rollhook", []), results.crashes.get("script", [])
    lines += [
        "",
        f"Broken release (migrates the data, then crashes on boot; app boot {boot_delay:g} s):",
        "",
        "| median (max) | rollhook | script |",
        "|---|---|---|",
        "| failure detected after the crash | "
        + _cell([c.detected_after for c in ours])
        + " | never |",
        "| old version serving after detection | "
        + _cell([c.recovered_after for c in ours])
        + f" | never (waited {results.crash_wait:.0f} s) |",
        "| data after the failure | "
        + ("intact" if ours and all(not c.problems for c in ours) else "NOT intact")
        + " | "
        + ("; ".join(theirs[0].problems) if theirs and theirs[0].problems else "intact")
        + " |",
        "",
        "| goal | figure | |",
        "|---|---|---|",
    ]
    lines += [f"| {g.text} | {g.figure} | {g.verdict} |" for g in found]
    return lines


def _cell(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known or len(known) != len(values):
        return "never"
    return f"{statistics.median(known):.2f} s ({max(known):.2f})"
