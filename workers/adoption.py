"""Adopting a compose project that was started by hand (``rollhook init`` writes its files).

rollhook recognises what it deployed by labels on the gated container. A project started
with ``docker compose up`` has none, so without this the first deployment would recreate
the app even when Git says exactly what runs: downtime for nothing. Here that case is
told apart: when every service already runs the planned image digest and Compose itself,
given the release's compose file without rollhook's override, would change nothing
(``compose --dry-run up``), the project is *adopted*: nothing is stopped or started, the
health URL is checked, and the deployment is recorded as ``succeeded`` (reason:
"adopted"), so that it is the target's current and last good deployment, a point later
rollbacks can return to. Its override file is written like any deployment's, so such a
rollback restarts it by digest, with rollhook's labels from then on.

When something differs (another digest, another setting, a missing service), the
deployment goes on as usual: a recreate, behind the health gate, with a backup first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.compose import ComposeSpec
from workers.engine import ContainerInfo
from workers.plan import Plan

if TYPE_CHECKING:
    from workers.rollout import Rollout, RolloutResult

LABEL = "rollhook.config-hash"


def _digest(image: str) -> str:
    return image.partition("@")[2]


def unchanged(rollout: Rollout, spec: ComposeSpec, plan: Plan) -> str | None:
    """Why the hand-started project already is ``plan`` (None: it is not, or it is ours)."""
    tools, target = rollout.tools, rollout.target
    running = {c.service: c for c in tools.engine.containers(target.project) if c.running}
    gated = running.get(target.service)
    if gated is None or LABEL in gated.labels:
        return None  # nothing runs, or rollhook started it: the usual comparison holds
    if not all(_runs_digest(running.get(s), _digest(i)) for s, i in plan.images.items()):
        return None
    if tools.compose.would_change(spec, timeout=120):
        return None
    return (
        f"adopted project {target.project}: it already runs {plan.commit[:12]} "
        f"({len(plan.images)} service(s), same digests and settings); nothing restarted"
    )


def _runs_digest(container: ContainerInfo | None, digest: str) -> bool:
    if container is None or not digest:
        return False
    return any(ref.endswith(f"@{digest}") for ref in container.repo_digests)


def adopt(rollout: Rollout, plan: Plan) -> RolloutResult:
    """Record the running project as this deployment: its override for later restarts,
    a health check without a restart, and the outcome."""
    outcome = rollout.outcome
    rollout.write_override(plan)
    with rollout.journal.step("adopt") as step:
        result = rollout.check_health()
        step["detail"] = result.reason
    if result.ok:
        outcome.status = "succeeded"
    else:
        outcome.status = "failed"
        outcome.reason = f"not adopted: the running app is not healthy: {result.reason}"
    return outcome
