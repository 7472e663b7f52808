"""rollhook's settings: one typed class, read from the environment once per process.

Every secret may also be given as ``NAME_FILE`` (a path), as Docker and Kubernetes
secrets are mounted. A secret that is set but empty is a configuration error: it stops
start-up with one line that names the setting, because an empty webhook secret would
otherwise switch verification off without anyone noticing. So is an inbound secret (one
that senders present to rollhook) shorter than 16 characters: a sender with the right
secret is never refused, so answers tell a guess from the secret as fast as the web
process answers, and only length makes guessing hopeless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The host of a target that names none, and of a worker started without --host.
LOCAL_HOST = "local"

# What senders and clients present to rollhook: guessable through its answers if short.
INBOUND_SECRETS = (
    "github_secret",
    "gitlab_token",
    "registry_token",
    "dockerhub_token",
    "harbor_token",
    "api_token",
    "metrics_token",
    "slack_signing_secret",
)
SECRET_NAMES = (
    *INBOUND_SECRETS,
    "git_token",
    "git_ssh_key",
    "github_token",
    "slack_token",
    "slack_webhook_url",
    "smtp_url",
    "redis_url",
    "database_url",
)
MIN_SECRET_LENGTH = 16  # the generated ones (scripts/run-embedded.sh) have 43


class ConfigError(Exception):
    """The operator's configuration is wrong; the message is one line naming the setting."""


def read_file_setting(environ: Mapping[str, str], env: str) -> str | None:
    """``env`` read from the file ``<env>_FILE`` names (stripped), or None without one;
    both set, or an unreadable file, is a ConfigError naming the setting."""
    path = environ.get(f"{env}_FILE")
    if path is None:
        return None
    if env in environ:
        raise ConfigError(f"{env} and {env}_FILE are both set; set only one")
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{env}_FILE: cannot read {path}: {exc.strerror}") from exc


def _read_secret_files(environ: dict[str, str]) -> dict[str, str]:
    """Fill ``ROLLHOOK_X`` from ``ROLLHOOK_X_FILE`` where only the file is given."""
    values: dict[str, str] = {}
    for name in SECRET_NAMES:
        env = f"ROLLHOOK_{name.upper()}"
        value = read_file_setting(environ, env)
        if value is not None:
            values[env] = value
    return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLHOOK_", extra="ignore")

    config: Path = Path("rollhook.yml")
    data_dir: Path = Path("data")

    github_secret: SecretStr | None = None
    gitlab_token: SecretStr | None = None
    registry_token: SecretStr | None = None
    dockerhub_token: SecretStr | None = None
    harbor_token: SecretStr | None = None
    api_token: SecretStr | None = None
    metrics_token: SecretStr | None = None

    redis_url: SecretStr | None = None
    database_url: SecretStr | None = None

    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    trusted_proxies: str = ""

    git_token: SecretStr | None = None
    git_ssh_key: SecretStr | None = None
    git_known_hosts: Path | None = None  # pinned SSH host keys; else trust on first use

    github_token: SecretStr | None = None
    github_api_url: str = "https://api.github.com"

    slack_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_webhook_url: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None  # Slack's button presses (service/slack.py)

    smtp_url: SecretStr | None = None
    email_from: str | None = None
    email_to: str | None = None
    notify_console: bool = False  # one log line per notification (make run, tests)

    # `rollhook proxy` fronts the web process too, with HTTPS for this name (the webhooks).
    public_host: str | None = None
    public_listen: str = ":443"
    public_tls: Literal["auto", "internal"] = "auto"  # internal: Caddy's local CA

    # The usual meanings, without our prefix.
    docker_host: str | None = Field(default=None, validation_alias="DOCKER_HOST")
    port: int = Field(default=8000, validation_alias="PORT")

    # Operations knobs: sensible defaults, tunable for tests and unusual hosts.
    lease_seconds: float = Field(default=30.0, gt=1)
    event_retention_days: float = Field(default=30.0, gt=1)
    auth_failures_allowed: int = Field(default=10, gt=0)
    auth_failure_window: float = Field(default=60.0, gt=0)
    worker_concurrency: int = Field(default=4, gt=0)
    # The host a worker serves (`rollhook worker --host NAME` sets it): it runs the
    # targets with `host: NAME` only. Checked by rollhook.targets.check_host_name.
    worker_host: str = LOCAL_HOST

    @field_validator(*SECRET_NAMES)
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip(" ,\n\t"):
            raise ValueError("is set but empty")
        return value

    @field_validator(*INBOUND_SECRETS)
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return value
        raw = value.get_secret_value()
        # The GitHub secret may be several, comma-separated during a rotation: each counts.
        parts = raw.split(",") if info.field_name == "github_secret" else [raw]
        if any(len(part.strip()) < MIN_SECRET_LENGTH for part in parts if part.strip()):
            raise ValueError(
                f"is shorter than {MIN_SECRET_LENGTH} characters; use a long random one "
                "(openssl rand -base64 32)"
            )
        return value

    # -- derived values -------------------------------------------------------------

    def github_secrets(self) -> list[bytes]:
        """All GitHub/Gitea secrets: several, comma-separated, during a rotation."""
        if self.github_secret is None:
            return []
        raw = self.github_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

    def records_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'records.sqlite').resolve()}"

    def broker_url(self) -> str:
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return f"embedded+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return self.redis_url is None

    def email_recipients(self) -> list[str]:
        return [a.strip() for a in (self.email_to or "").split(",") if a.strip()]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; raise ConfigError with one line naming the setting."""
    try:
        init: dict[str, Any] = {
            key.removeprefix("ROLLHOOK_").lower(): value
            for key, value in _read_secret_files(dict(os.environ)).items()
        }
        return Settings(**(init | overrides))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        raise ConfigError(
            f"ROLLHOOK_{field.upper()}: {error['msg'].removeprefix('Value error, ')}"
        ) from None
