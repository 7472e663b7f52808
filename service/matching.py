"""From hints to configured targets: which targets should look again, or why none.

Git pushes match by repository (``repo_key``) and branch, then by path when the
payload's file lists are complete; when they may be truncated the push is queued and
the worker decides with ``git diff``. Image pushes match by registry host +
repository and the target's tag policy. Paused targets are filtered later, in the same
transaction that stores the event (see ``service.recorder``), so that a pause is
never read stale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from rollhook.targets import TagPolicy, Target
from service.sources import GitPush, Hints, Ignored, ImagePush, Push

# When no target matches, the sender is told the reason that got furthest.
_GIT_REASONS = ("unknown repository", "another branch", "no watched path changed")
_IMAGE_REASONS = ("unknown image", "tag outside policy")


@dataclass(frozen=True)
class _Follower:
    target: Target
    policy: TagPolicy


class Matcher:
    """Built once from the targets file; matching is a few dictionary lookups."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        self.targets = dict(targets)
        self._by_repo: dict[str, list[Target]] = defaultdict(list)
        self._by_image: dict[str, list[_Follower]] = defaultdict(list)
        for target in targets.values():
            self._by_repo[target.repo_key].append(target)
            follower = _Follower(target, target.tag_policy)
            for ref in target.image_refs:
                self._by_image[ref.name].append(follower)

    def match(self, hints: Hints) -> dict[str, Push] | Ignored:
        """target name -> the push it follows (the newest, when several name it)."""
        matched: dict[str, tuple[tuple[str, int], Push]] = {}
        miss: Ignored | None = None
        miss_rank = -1
        for position, push in enumerate(hints.pushes):
            if isinstance(push, GitPush):
                names, why = self._match_git(push)
                rank = _GIT_REASONS.index(why.reason) if why else -1
            else:
                names, why = self._match_image(push)
                rank = _IMAGE_REASONS.index(why.reason) if why else -1
            if why is not None and rank > miss_rank:
                miss, miss_rank = why, rank
            order = (push.order if isinstance(push, ImagePush) else "", position)
            for name in names:
                if name not in matched or matched[name][0] <= order:
                    matched[name] = (order, push)
        if matched:
            return {name: push for name, (_, push) in matched.items()}
        return miss or Ignored("no matching target")

    def _match_git(self, push: GitPush) -> tuple[list[str], Ignored | None]:
        candidates = [t for key in push.repo_keys for t in self._by_repo.get(key, ())]
        if not candidates:
            # Say what was compared, in the form compared: that is what the operator
            # checks against the targets' `repo` (a full_name would not show a host).
            compared = " or ".join(sorted(push.repo_keys))
            return [], Ignored("unknown repository", f"no target's repo is {compared}")
        on_branch = [t for t in candidates if t.branch == push.branch]
        if not on_branch:
            return [], Ignored("another branch", push.branch)
        if push.changed is None:
            return [t.name for t in on_branch], None
        watching = [t for t in on_branch if any(t.watches_path(p) for p in push.changed)]
        if not watching:
            return [], Ignored("no watched path changed")
        return [t.name for t in watching], None

    def _match_image(self, push: ImagePush) -> tuple[list[str], Ignored | None]:
        followers = self._by_image.get(push.image.name)
        if not followers:
            return [], Ignored("unknown image", push.image.name)
        allowed = [f.target.name for f in followers if f.policy.allows(push.tag)]
        if not allowed:
            return [], Ignored("tag outside policy", push.tag)
        return allowed, None
