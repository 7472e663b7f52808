"""A person's rejection (``rollhook reject``, Slack's Reject button): what waits ends.

The automatic deployments of the target that wait for approval (manual mode) are ended
unrun, as superseded, with who rejected them and when in their reason; a person's own
queued requests and what already runs are left alone. The next change found is news
again (its wait is told anew: workers/approval.py keys the notice by the oldest waiting).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from rollhook.jobs import Job
from rollhook.records import deployments
from rollhook.records.schema import utcnow
from workers.approval import waiting

logger = logging.getLogger("rollhook.rejection")


def reject_waiting(conn: Connection, job: Job) -> list[str]:
    """End the target's waiting automatic deployments; their ids."""
    who = job.trigger.actor or job.trigger.source
    when = utcnow().isoformat(timespec="seconds")
    rejected = [record.id for record in waiting(conn, job.target)]
    for deployment_id in rejected:
        deployments.finish_unstarted(
            conn,
            deployment_id,
            "superseded",
            f"rejected by {who} at {when} (event {job.trigger.event_id})",
        )
    logger.info("%s: %d waiting deployment(s) rejected by %s", job.target, len(rejected), who)
    return rejected
