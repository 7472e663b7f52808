"""Off-host backups in the targets file, and the repository credentials in the environment.

```yaml
    backup:
      keep: 5                                    # local backups (deployment-time)
      remote:
        repository: "sftp:backup@host:/rollhook" # anything restic 0.14 takes
        password_file: /run/secrets/restic       # default: RESTIC_PASSWORD_FILE
        schedule: "daily 03:00"                  # rollhook/schedule.py; none: no scheduled ones
        retention: {daily: 7, weekly: 4, monthly: 6}
        final_pass: none                         # stop: a short stop of the service at the end
        after_deploy: true                       # also send each deployment's backup
        options: {}                              # restic -o key=value (sftp.command, s3.region)
      drill: weekly                              # or {schedule: weekly, port_env: SERVER_PORT}
```
The backend's credentials are restic's own environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``B2_ACCOUNT_KEY``, ``AZURE_ACCOUNT_KEY``...), each secret one
also as ``NAME_FILE`` (a path, for Docker and Kubernetes secrets); they are read once by
:func:`restic_environment` and handed to restic alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from rollhook.schedule import Schedule
from rollhook.settings import read_file_setting

ENV_PREFIXES = ("RESTIC_", "AWS_", "B2_", "AZURE_", "GOOGLE_")
# Given by the target's own settings (or turned into them): never passed through, so
# the environment cannot contradict them (workers/backup/remote.py refuses them too).
OWN = frozenset(
    {
        "RESTIC_REPOSITORY",
        "RESTIC_REPOSITORY_FILE",
        "RESTIC_PASSWORD",
        "RESTIC_PASSWORD_FILE",
        "RESTIC_PASSWORD_COMMAND",
        "RESTIC_CACHE_DIR",
    }
)
# The secrets among restic's variables: each may come from NAME_FILE instead.
SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "B2_ACCOUNT_ID",
    "B2_ACCOUNT_KEY",
    "AZURE_ACCOUNT_NAME",
    "AZURE_ACCOUNT_KEY",
    "AZURE_ACCOUNT_SAS",
    "GOOGLE_ACCESS_TOKEN",
)


def _schedule(value: Any) -> Any:
    if value is None or isinstance(value, Schedule):
        return value
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueErrors, not TypeErrors
            "a schedule is text: hourly, daily HH:MM or weekly Sun HH:MM"
        )
    return Schedule.parse(value)


# Read from text, written back as text (``model_dump``: the targets file's own words).
ScheduleText = Annotated[
    Schedule, BeforeValidator(_schedule), PlainSerializer(str, return_type=str)
]


class Retention(BaseModel):
    """How many snapshots ``restic forget`` keeps: the last n, and one per day/week/month."""

    model_config = ConfigDict(extra="forbid")

    last: int = Field(default=0, ge=0)
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if not (self.last or self.daily or self.weekly or self.monthly):
            raise ValueError("must keep something (last, daily, weekly or monthly above 0)")
        return self


class RemoteBackup(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    repository: str
    password_file: Path | None = None
    schedule: ScheduleText | None = None
    retention: Retention = Retention()
    final_pass: Literal["none", "stop"] = "none"  # noqa: S105 - a pass over data
    after_deploy: bool = True
    options: dict[str, str] = {}

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        text = value.strip()
        if not text:
            raise ValueError("empty")
        if "\n" in text or text.startswith("-"):
            raise ValueError("not a restic repository")
        _, _, rest = text.partition(":")
        if "://" in text and urlsplit(rest if "://" in rest else text).password is not None:
            raise ValueError(
                "a password in the repository URL would show in every process listing; "
                "give the backend's credentials in its environment variables"
            )
        return text

    @field_validator("password_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"{value} must be an absolute host path")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, str]) -> dict[str, str]:
        for key, option in value.items():
            if not key or "=" in key or "\n" in key or "\n" in str(option):
                raise ValueError(f"{key!r}: restic options are name: value (e.g. s3.region)")
        return {str(k): str(v) for k, v in value.items()}


class Drill(BaseModel):
    """The restore drill: the latest snapshot restored and started beside the live app."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    schedule: ScheduleText | None = None  # None: only `rollhook drill NAME`
    # For a service on the host network: the variable its port is read from (anything-llm:
    # SERVER_PORT), so the drill's copy can listen on a spare port. A service with a
    # published port gets a spare host port instead.
    port_env: str | None = None

    @field_validator("port_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "a").isalnum():
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


def drill_of(value: Any) -> Any:
    """``drill: weekly`` is ``drill: {schedule: weekly}``."""
    if isinstance(value, str):
        return {"schedule": value}
    return value


DrillSetting = Annotated[Drill, BeforeValidator(drill_of)]


def restic_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """restic's variables for the backends, secrets read from ``NAME_FILE`` where given.

    Raises ConfigError (one line naming the variable) for a file that cannot be read, or
    a secret given both ways.
    """
    found: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIXES) and key not in OWN:
            if key.endswith("_FILE") and key.removesuffix("_FILE") in SECRETS:
                continue
            found[key] = value
    for name in SECRETS:
        secret = read_file_setting(environ, name)
        if secret is not None:
            found[name] = secret
    return found


def password_file(remote: RemoteBackup, environ: Mapping[str, str]) -> Path | None:
    """The repository's password file: the target's own, else RESTIC_PASSWORD_FILE."""
    if remote.password_file is not None:
        return remote.password_file
    fallback = environ.get("RESTIC_PASSWORD_FILE")
    return Path(fallback) if fallback else None


def remote_problems(name: str, remote: RemoteBackup, environ: Mapping[str, str]) -> list[str]:
    """What on this host keeps the repository from being used, one line each."""
    where = f"targets.{name}.backup.remote"
    path = password_file(remote, environ)
    if path is None:
        hint = " (RESTIC_PASSWORD is not read: give the password as a file)"
        return [
            f"{where}.password_file: not set, and RESTIC_PASSWORD_FILE is not in the environment"
            + (hint if "RESTIC_PASSWORD" in environ else "")
        ]
    try:
        text = path.read_text()
    except OSError as exc:
        return [f"{where}.password_file: cannot read {path}: {exc.strerror}"]
    except UnicodeDecodeError:
        return [f"{where}.password_file: {path} is not text"]
    if not text.strip():
        return [f"{where}.password_file: {path} is empty"]
    if path.stat().st_mode & 0o007:
        return [
            f"{where}.password_file: {path} can be read by every user of this host; it is "
            "the key to every snapshot (chmod o-rwx it)"
        ]
    return []
