"""The data directory: records, the embedded broker, checkouts, the app's live data and
its backups (which hold anything-llm's runtime .env). Nobody but rollhook reads it."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

logger = logging.getLogger("rollhook")


def prepare_data_dir(path: Path) -> Path:
    """Create the data directory private (0700); warn when an existing one is not."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is masked by the umask
    elif path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "%s is readable by other users; it holds the app's data and its backups (chmod 700 it)",
            path,
        )
    return path
