"""A heal: the current deployment applied again because what runs drifted from it.

Same commit, same digests, the same override file (so the containers carry the current
deployment's labels again): no backup, no data restore, no migration. It inspects again
first (the drift may be gone), then ``compose up`` (removing orphans only with
``sync.prune``) and the health gate. A failed heal is ``failed``: there is nothing to roll
back to, and it counts toward the heal limit. A heal never changes what the target's
current deployment is.

Behind the proxy a heal goes through the hold like a recreate: new requests wait in the
proxy from just before ``compose up`` until the gate passed, then go to what serves. A
start-first target is healed in the colour its current deployment's record says serves
(its own project and port), and the route is left pointing at that colour's port.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Target
from workers import colours
from workers.colours import Colour, gate_url
from workers.compose import write_override
from workers.errors import DeployError, LeaseLost, OperatorError
from workers.health import gate
from workers.journal import Journal
from workers.layout import TargetDirs, compose_spec
from workers.rollout import RolloutResult, Tools


def describe(drift: list[dict[str, str]]) -> str:
    return "; ".join(f"{d['service']} {d['what']}: {d['detail']}" for d in drift) or "none"


@dataclass
class Heal:
    target: Target
    record: DeploymentRecord  # the heal's own
    good: DeploymentRecord  # the target's current deployment
    journal: Journal
    tools: Tools
    dirs: TargetDirs
    running: dict[str, str]  # service -> image as the containers run it now
    find_drift: Callable[[], list[dict[str, str]]]
    cancelled: Callable[[], bool]
    outcome: RolloutResult

    def run(self) -> RolloutResult:
        good, journal, outcome = self.good, self.journal, self.outcome
        if good.commit is None:
            raise OperatorError(f"{good.id} has no commit to apply again")
        outcome.commit, outcome.commit_info = good.commit, good.commit_info
        outcome.images = {
            service: {"old": self.running.get(service), "new": change.get("new")}
            for service, change in (good.images or {}).items()
        }
        journal.update(
            commit=good.commit,
            commit_info=good.commit_info,
            images=outcome.images,
            config_hash=good.config_hash,
            fingerprint=good.fingerprint,
            requested={**self.record.requested, "heal_of": good.id},
        )
        with journal.step("inspect") as step:
            drift = self.find_drift()
            step["detail"] = describe(drift)
            if not drift:
                outcome.status, outcome.in_sync = "no_op", True
                outcome.reason = "nothing drifted any more"
                return outcome
        journal.log(f"heal: applying {good.id} again: {describe(drift)}")
        outcome.changed = True
        deadline = time.monotonic() + self.target.deploy_timeout
        colour = colours.serving_colour(self.target, good)
        traffic = self.tools.traffic
        with journal.step("start") as step:
            self._files()
            if traffic is not None:
                if colour is not None:
                    traffic.port = colour.port  # what settles the route, however this ends
                # Like a recreate: no request may meet the app being recreated or booting.
                # Never fails the heal: the app is already not as it should be. An app
                # that is not running has nothing to drain: requests sent to it before
                # the hold wait in the proxy for it to come back, not for the hold.
                traffic.hold(required=False, drain=self._gated_running(colour))
            spec = compose_spec(self.target, self.dirs, good.commit, good.id, colour)
            self.tools.compose.up(
                spec,
                timeout=max(1.0, min(300.0, deadline - time.monotonic())),
                remove_orphans=self.target.sync.prune,
            )
            step["detail"] = f"{good.id} applied again" + (
                f" as {colour.name} ({colour.project}, port {colour.port})" if colour else ""
            )
        with journal.step("gate") as step:
            result = self._gate(max(1.0, deadline - time.monotonic()), colour)
            step["detail"] = result
        if traffic is not None:
            traffic.serve(colour.port if colour is not None else None)
        outcome.status, outcome.reason = "succeeded", None
        return outcome

    def _files(self) -> None:
        """The release and the override of the good deployment, written again if pruned
        (housekeeping keeps the current deployment's; this is for a hand-cleaned disk)."""
        good, target, commit = self.good, self.target, self.good.commit or ""
        release = self.dirs.release(commit)
        if not release.exists():
            self.tools.git.fetch(target.branch)
            self.tools.git.export(commit, target.path, release)
        override = self.dirs.override(good.id)
        if not override.exists():
            write_override(
                override,
                {s: str(v.get("new")) for s, v in (good.images or {}).items() if v.get("new")},
                {
                    target.service: {
                        "rollhook.target": target.name,
                        "rollhook.deployment": good.id,
                        "rollhook.commit": commit,
                        "rollhook.config-hash": good.config_hash or "",
                    }
                },
                grace={target.service: target.stop_timeout},
            )
            self.journal.log(f"heal: wrote {override} again from the record")

    def _gated_running(self, colour: Colour | None) -> bool:
        project = colour.project if colour is not None else self.target.project
        return any(
            c.running
            for c in self.tools.engine.containers(project)
            if c.service == self.target.service
        )

    def _gate(self, timeout: float, colour: Colour | None) -> str:
        target, engine = self.target, self.tools.engine
        project = colour.project if colour is not None else target.project
        url = gate_url(target.health.url, colour.port) if colour else target.health.url

        def watch() -> Any:
            found = [c for c in engine.containers(project) if c.service == target.service]
            return found[0].state if found else None

        result = gate(
            url,
            timeout=min(timeout, target.health.timeout),
            settle=target.health.settle,
            interval=target.health.interval,
            watch=watch,
            cancelled=self.cancelled,
        )
        if self.cancelled():
            raise LeaseLost(f"{self.journal.deployment_id}: lease lost during the health gate")
        if not result.ok:
            raise DeployError(f"health gate failed: {result.reason}")
        return result.reason
