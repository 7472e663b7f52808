"""The one value that crosses from the web process to the workers.

A job is a hint about one target: "look again, because this happened". The worker never
trusts it for what to deploy: it re-reads Git and re-resolves tags to digests. It is
stored in the records database (the outbox) before the webhook is answered, and is sent
to the broker as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

# Where a request came from. ``poll``: the reconcile loop found a new desired state;
# ``heal``: it puts back what drifted from the current deployment.
Source = Literal[
    "github",
    "gitea",
    "gitlab",
    "registry",
    "dockerhub",
    "harbor",
    "ghcr",
    "api",
    "poll",
    "heal",
    "slack",
]


class ImageHint(BaseModel):
    """An image push reported by a registry (or asked for on ``/deploy``)."""

    model_config = ConfigDict(frozen=True)

    repository: str  # normalised registry/repository, e.g. docker.io/mintplexlabs/anythingllm
    tag: str | None = None
    digest: str | None = None  # what the sender claimed; re-resolved before use


class Trigger(BaseModel):
    """Who or what asked, for the record and the notifications."""

    model_config = ConfigDict(frozen=True)

    source: Source
    event_id: str
    delivery_id: str | None = None
    actor: str | None = None


# What a job asks for. ``heal``: re-apply the current deployment (same commit and digests,
# no backup) because what runs drifted from it. ``sync`` (a person, POST
# /targets/{name}/sync): poll now and apply what is found: the approval in manual mode.
# ``reject`` (a person, POST /targets/{name}/reject or Slack's Reject button): the automatic
# deployments that wait for approval end unrun (workers/rejection.py).
Action = Literal["deploy", "rollback", "heal", "sync", "reject"]


class Job(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    target: str
    action: Action = "deploy"
    trigger: Trigger
    received_at: datetime
    # A Git push: the commit the sender says is the new head (a hint), or a ref asked
    # for on /deploy (a branch name or sha that must be in the tracked branch).
    ref: str | None = None
    image: ImageHint | None = None
    rollback_to: str | None = None  # a deployment id; None means the last good one
    restore_data: bool | None = None  # rollback only: None means "when needed"
    restore_backup: str | None = None  # rollback only: restore this backup (`rollhook restore`)
    manual: bool = False  # a person asked: a failed desired state may be retried
    force: bool = False  # a person knowingly deploys outside the deploy window (recorded)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        return cls.model_validate_json(text)
