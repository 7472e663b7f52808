"""``strategy: start-first``: the new version beside the old one, then the switch.

The old version serves from one colour (``workers.colours``: a compose project on one
port of the pair) and is not touched until the new one has taken the traffic:

``start`` the new colour (its own project, ``${ROLLHOOK_PORT}`` = its port) -> ``gate``
it on its own port -> ``switch``: record that it serves, then the proxy sends every new
request to it, while requests in flight on the old colour finish there (``drain``, up to
``stop_timeout``) -> ``stop`` the old colour.

A failed start or gate only stops the new colour (``discard``): the old one kept serving
throughout and never stopped, so there is nothing to roll back and no request waited.
The outcome is ``rolled_back`` (the new version failed, the old one serves), and the
failed desired state is remembered like any other.

The record's ``colours`` says which colour serves, and is written before the proxy is
told: a worker that dies anywhere leaves a record the next one can finish from
(``resume``): the new colour gated again and switched to, or, once it was switched to,
the old one stopped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from workers import colours
from workers.colours import Colour
from workers.errors import DeployError, InfrastructureError, LeaseLost
from workers.layout import compose_spec
from workers.plan import Plan

if TYPE_CHECKING:
    from workers.compose import ComposeSpec
    from workers.rollout import Rollout, RolloutResult


class StartFirst:
    """The start-first half of a :class:`Rollout` (its journal, tools and outcome)."""

    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout
        self.target, self.journal, self.tools = rollout.target, rollout.journal, rollout.tools
        self.traffic = rollout.traffic

    # -- the verbs the rollout calls ---------------------------------------------------

    def roll_out(self, plan: Plan) -> RolloutResult:
        old = self.rollout.previous.colour or colours.serving(self.target, None)
        new = colours.other(self.target, old)
        self.traffic.port = old.port
        self.journal.skip("backup", "start-first: the old version keeps running on its data")
        self._record(old, new, serving=old)
        return self._start_gate_switch(plan, old, new)

    def resume(self) -> RolloutResult:
        """A dead worker's start-first deployment: finish it from what its record says."""
        plan = self.rollout._recorded_plan()
        old, new, serving = self._recorded()
        self.journal.log(
            f"recovery: resuming {self.rollout.record.id} (attempt {self.rollout.record.attempt}); "
            f"{serving.name} serves"
        )
        if serving == new:  # the gate passed and the switch was recorded
            self.traffic.serve(new.port)
            return self._finish(plan, old, new)
        self.traffic.serve(old.port)
        return self._start_gate_switch(plan, old, new)

    def abandon(self, why: str) -> RolloutResult:
        """Too many worker deaths: keep whichever colour the record says serves."""
        plan = self.rollout._recorded_plan()
        old, new, serving = self._recorded()
        if serving == new:
            self.traffic.serve(new.port)
            return self._finish(plan, old, new)
        self.traffic.serve(old.port)
        self._discard(plan, new, InfrastructureError(why))
        return self.rollout.outcome

    # -- steps -------------------------------------------------------------------------

    def _spec(self, plan: Plan, colour: Colour) -> ComposeSpec:
        return compose_spec(
            self.target, self.rollout.dirs, plan.commit, self.rollout.record.id, colour
        )

    def _start_gate_switch(self, plan: Plan, old: Colour, new: Colour) -> RolloutResult:
        rollout, journal = self.rollout, self.journal
        spec = self._spec(plan, new)
        try:
            with journal.step("start") as step:
                rollout._check_time()
                self.tools.compose.up(spec, timeout=rollout._remaining(300))
                self._record(old, new, serving=old)
                step["detail"] = (
                    f"{new.name} ({new.project}) started on port {new.port}; "
                    f"{old.name} serves on {old.port}"
                )
            with journal.step("gate") as step:
                result = rollout._gate(forward=True, colour=new)
                step["detail"] = result.reason
                if not result.ok:
                    raise DeployError(f"health gate failed: {result.reason}")
        except LeaseLost:
            raise
        except BaseException as exc:
            self._discard(plan, new, exc)
            raise
        with journal.step("switch") as step:
            # The record first: whoever picks this up after a crash serves what it says.
            self._record(old, new, serving=new)
            self.traffic.serve(new.port)
            bound = self.target.stop_timeout
            left = self.traffic.drain(bound)
            step["detail"] = f"{new.name} serves on port {new.port}" + (
                f"; {left} request(s) still running on {old.name} after {bound:g}s"
                if left
                else f"; requests on {old.name} finished"
            )
        return self._finish(plan, old, new)

    def _finish(self, plan: Plan, old: Colour, new: Colour) -> RolloutResult:
        """The new colour serves: stop the old one (its containers stay, stopped)."""
        with self.journal.step("stop") as step:
            running = sorted(
                {c.service for c in self.tools.engine.containers(old.project) if c.running}
            )
            if not running:
                step["detail"] = f"nothing ran as {old.name}"
            else:
                stopped = self._stop_colour(self._old_spec(plan, old), running, step)
                step["detail"] = f"{old.name} stopped in {stopped:.1f} s" + (
                    f"; {step['note']}" if step.get("note") else ""
                )
        self._record(old, new, serving=new)
        self.rollout.outcome.status = "succeeded"
        self.rollout.outcome.reason = None
        return self.rollout.outcome

    def _discard(self, plan: Plan, new: Colour, cause: BaseException) -> None:
        """The new colour failed: stop it; the old one never stopped and still serves."""
        outcome, journal = self.rollout.outcome, self.journal
        journal.log(f"discarding {new.name}: {cause}")
        try:
            with journal.step("discard") as step:
                services = sorted(
                    {c.service for c in self.tools.engine.containers(new.project) if c.running}
                )
                self._stop_colour(self._spec(plan, new), services, step)
                step["detail"] = f"{new.name} stopped; the old version kept serving throughout"
        except LeaseLost:
            raise
        except DeployError as exc:  # it may still run beside the old one: say so
            journal.log(f"could not stop {new.name}: {exc}", level=logging.ERROR)
        outcome.status = "rolled_back"
        outcome.reason = f"{cause}; the old version kept serving (start-first: never stopped)"

    # -- helpers -----------------------------------------------------------------------

    def _stop_colour(
        self, spec: ComposeSpec, services: list[str], step: dict[str, object]
    ) -> float:
        if not services:
            return 0.0
        return self.rollout._stop(spec, step, services).seconds

    def _old_spec(self, plan: Plan, old: Colour) -> ComposeSpec:
        """How the old colour was started: its own release, when rollhook knows it."""
        previous, dirs = self.rollout.previous, self.rollout.dirs
        if previous.commit and previous.deployment_id and dirs.release(previous.commit).exists():
            return compose_spec(self.target, dirs, previous.commit, previous.deployment_id, old)
        return self._spec(plan, old)

    def _record(self, old: Colour, new: Colour, *, serving: Colour) -> None:
        engine = self.tools.engine
        containers: dict[str, list[str]] = {
            colour.name: [c.container_id for c in engine.containers(colour.project) if c.running]
            for colour in (old, new)
        }
        self.journal.update(colours=colours.describe(serving, old, new, containers))

    def _recorded(self) -> tuple[Colour, Colour, Colour]:
        value = self.rollout.record.colours or {}
        if not value.get("old") or not value.get("new"):
            raise InfrastructureError(
                f"{self.rollout.record.id} recorded no colours: nothing to pick up"
            )
        old = colours.named(self.target, str(value["old"]))
        new = colours.named(self.target, str(value["new"]))
        serving = new if value.get("serving") == new.name else old
        self.traffic.port = serving.port
        return old, new, serving
