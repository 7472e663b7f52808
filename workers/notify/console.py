"""One log line per notification: the channel for ``make run`` and tests
(``ROLLHOOK_NOTIFY_CONSOLE``), where no Slack or mail server is at hand.

It is told what Slack would be (the start of a deployment that changes something, its
end, every repeat of a failure) through the same rows and delivery as every channel. The
line holds the shared headline, the deployment and its trigger: never a secret, since
the report it comes from is scrubbed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from workers.notify import backup_notice, wording
from workers.notify.backup_notice import BackupNotice
from workers.notify.channels import Channel, Delivery
from workers.notify.host_notice import HostNotice
from workers.notify.notices import Notice, TargetNotice

logger = logging.getLogger("rollhook.notify.console")


@dataclass(frozen=True)
class ConsoleNotifier:
    channel: ClassVar[Channel] = "console"
    tells_progress: ClassVar[bool] = True

    def send(self, notice: Notice, delivery: Delivery) -> str:
        if isinstance(notice, TargetNotice):
            if delivery.sent.get("logged"):
                return "already logged"
            logger.info("notification: %s (target %s)", notice.headline, notice.target)
            delivery.keep({"logged": ["final"]})
            return "logged"
        logged = list(delivery.sent.get("logged") or [])
        if isinstance(notice, (BackupNotice, HostNotice)):
            if logged:
                return "already logged"
            logger.warning("notification: %s", backup_notice.log_line(notice))
            delivery.keep({"logged": ["final"]})
            return "logged"
        report, phase = notice.report, notice.view.phase
        if phase in logged:
            return "already logged"
        notes = "".join(f"; {note}" for note in report.notes) if phase == "final" else ""
        logger.info(
            "notification: %s (deployment %s, %s)%s",
            wording.headline(report, notice.view),
            report.deployment_id,
            wording.trigger(report),
            notes,
        )
        delivery.keep({"logged": [*logged, phase]})
        return "logged"
