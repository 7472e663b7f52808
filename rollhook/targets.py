"""The targets file (``ROLLHOOK_CONFIG``): what rollhook deploys, from where, and how.

Loading validates everything up front; each problem is explained in one line that
names the target and the key, which is what ``rollhook check-config`` prints.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rollhook.images import ImageRef, ReferenceError, parse_reference
from rollhook.offsite import DrillSetting, RemoteBackup
from rollhook.settings import LOCAL_HOST, ConfigError
from rollhook.windows import Rule, Windows, parse_rule

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A host's name becomes part of its queues' names (rollhook.broker.host_queue).
HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# What `repo` accepts, as check-config explains it (every form git itself fetches from).
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")
REPO_FORMS = "https://, http://, ssh://, git://, git@host:path or file://"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>\d{1,5})$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


_DIGITS = re.compile(r"(\d+)")


def natural_key(tag: str) -> tuple[tuple[int, int, str], ...]:
    """Digit runs compared as numbers, the rest as text: ``1.9-alpine`` < ``1.10-alpine``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(tag)
        if part
    )


def parse_duration(value: Any) -> float:
    """``180s``, ``3m``, ``1.5h``, ``500ms`` or a bare number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 10s, 3m, 1h)")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class TagPolicy:
    """Which pushed tags a target follows: ``exact:1.16.1``, ``glob:1.*``, ``semver:>=1.16,<2``."""

    def __init__(self, text: str) -> None:
        kind, sep, pattern = text.partition(":")
        if not sep or kind not in {"exact", "glob", "semver"}:
            kind, pattern = "glob", text
        if not pattern:
            raise ValueError(f"empty tag policy {text!r}")
        self.kind, self.pattern, self.text = kind, pattern, text
        self._spec: SpecifierSet | None = None
        if kind == "semver":
            try:
                self._spec = SpecifierSet(pattern)
            except InvalidSpecifier as exc:
                raise ValueError(f"invalid semver range {pattern!r}") from exc

    def allows(self, tag: str) -> bool:
        if self.kind == "exact":
            return tag == self.pattern
        if self.kind == "glob":
            return fnmatch.fnmatchcase(tag, self.pattern)
        try:
            version = Version(tag.removeprefix("v"))
        except InvalidVersion:
            return False
        return self._spec is not None and self._spec.contains(version, prereleases=False)

    def newer(self, candidate: str, current: str | None) -> bool:
        """Whether ``candidate`` is a later tag than ``current`` in this policy's order:
        by version when both are versions (a leading ``v`` ignored), else in natural order
        (digit runs as numbers) when ``current`` is one the policy allows itself; a tag like
        ``latest`` is never older than anything."""
        if current is None or candidate == current:
            return False
        try:
            return Version(candidate.removeprefix("v")) > Version(current.removeprefix("v"))
        except InvalidVersion:
            pass
        return self.allows(current) and natural_key(candidate) > natural_key(current)

    def __repr__(self) -> str:
        return f"TagPolicy({self.text!r})"


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    timeout: Duration = 180.0
    settle: Duration = 10.0
    interval: Duration = 0.5

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must be an http:// or https:// URL")
        return value


class Backup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: int = Field(default=5, ge=1)
    enabled: bool = True
    # Off-host snapshots in a restic repository, and the restore drill (rollhook/offsite.py).
    remote: RemoteBackup | None = None
    drill: DrillSetting | None = None

    @model_validator(mode="after")
    def _drill_needs_remote(self) -> Backup:
        if self.drill is not None and self.remote is None:
            raise ValueError("drill restores the latest remote snapshot: it needs remote")
        return self


class Notify(BaseModel):
    """Which deployment results notify a channel (per target)."""

    model_config = ConfigDict(extra="forbid")

    on: list[Literal["succeeded", "failed", "rolled_back", "no_op", "recovered"]] = [
        "succeeded",
        "failed",
        "rolled_back",
        "recovered",
    ]
    slack: bool = True
    email: bool = True
    commit_status: bool = False
    # Per channel, a list that replaces ``on`` for that channel: {email: [failed, rolled_back]}.
    channels: dict[
        Literal["slack", "email"],
        list[Literal["succeeded", "failed", "rolled_back", "no_op", "recovered"]],
    ] = {}


_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEAL_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


def parse_heal_limit(value: str) -> tuple[int, float]:
    """``3/1h`` -> (3, 3600.0): at most that many heals of one deployment per window."""
    match = _HEAL_LIMIT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a heal limit: {value!r} (use <count>/<duration>, e.g. 3/1h)")
    count, window = int(match.group(1)), parse_duration(match.group(2).strip())
    if count < 1 or window <= 0:
        raise ValueError("a heal limit needs at least 1 heal in a window longer than 0s")
    return count, window


class WriteBack(BaseModel):
    """Where rollhook commits an image tag that a registry push or a poll moved.

    A ``.env``-style file (relative to the target's ``path``) takes ``variable``; a
    compose file (``*.yml``/``*.yaml``) takes ``service``, whose ``image:`` tag is rewritten.
    In a ``.env`` file ``service`` says whose image the variable holds (default: the
    target's gated service).
    """

    model_config = ConfigDict(extra="forbid")

    file: str = ".env"
    variable: str | None = None
    service: str | None = None
    branch: str | None = None  # default: the target's tracked branch

    @field_validator("file")
    @classmethod
    def _inside(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not value or path.is_absolute() or ".." in path.parts or str(path) == ".":
            raise ValueError("a file inside the target's folder (no leading '/', no '..')")
        return str(path)

    @field_validator("variable")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.match(value):
            raise ValueError("a variable name: letters, digits and '_'")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is not None and (
            not _BRANCH.match(value) or ".." in value or value.endswith((".lock", "/"))
        ):
            raise ValueError("not a valid branch name")
        return value

    @property
    def compose(self) -> bool:
        return self.file.endswith((".yml", ".yaml"))

    @model_validator(mode="after")
    def _one_way(self) -> WriteBack:
        if self.compose and self.variable is not None:
            raise ValueError("a compose file takes service (its image: line), not variable")
        if self.compose and self.service is None:
            raise ValueError("a compose file needs service: whose image: line to rewrite")
        if not self.compose and self.variable is None:
            raise ValueError(f"{self.file} needs variable: the name that holds the tag")
        return self


class Sync(BaseModel):
    """The reconcile loop for one target (PRODUCT.md "Reconciliation: the GitOps loop")."""

    model_config = ConfigDict(extra="forbid")

    interval: Duration = 180.0  # 0: webhooks only (drift is still watched)
    auto: bool = True  # False: what is found waits for approval (POST /targets/{name}/sync)
    self_heal: bool = True
    prune: bool = True
    heal_limit: str = "3/1h"
    write_back: WriteBack | None = None

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if 0 < value < 5:
            raise ValueError("poll at most every 5s (or 0: webhooks only)")
        return value

    @field_validator("heal_limit")
    @classmethod
    def _heal_limit(cls, value: str) -> str:
        parse_heal_limit(value)
        return value.strip()

    @property
    def heals_allowed(self) -> tuple[int, float]:
        """(heals, window in seconds) per deployment."""
        return parse_heal_limit(self.heal_limit)


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,30}$")


class Approve(BaseModel):
    """Who may approve a target's waiting changes from Slack (service/slack.py)."""

    model_config = ConfigDict(extra="forbid")

    slack: bool = False  # the waiting message carries Approve and Reject buttons
    approvers: list[str] = []  # Slack user ids (U024BE7LH); only their presses count

    @field_validator("approvers")
    @classmethod
    def _user_ids(cls, value: list[str]) -> list[str]:
        for user in value:
            if not _SLACK_USER.match(user):
                raise ValueError(f"{user!r}: a Slack user id (U024BE7LH), not a name")
        return value


class Proxy(BaseModel):
    """How the front proxy (Caddy) serves a target; see workers/proxy."""

    model_config = ConfigDict(extra="forbid")

    listen: str
    hosts: list[str] = []
    port: int = Field(ge=1, le=65535)
    hold: Duration = 60.0
    # auto: Caddy's automatic HTTPS (ACME) for the hosts; internal: Caddy's own local CA.
    tls: Literal["auto", "internal"] = "auto"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value.strip())
        if match is None or not 1 <= int(match.group("port")) <= 65535:
            raise ValueError("use host:port, e.g. 127.0.0.1:8080 or :443")
        host = match.group("host")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError as exc:
                raise ValueError(f"{host} is not an IPv6 address") from exc
        return f"{host}:{int(match.group('port'))}"

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        names = []
        for text in value:
            name = text.strip().lower().removesuffix(".")
            if _is_ip(name):
                raise ValueError(f"{text}: a DNS name, not an address")
            labels = name.split(".")
            if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
                raise ValueError(f"{text}: not a DNS name (letters, digits, '-' and dots)")
            if name in names:
                raise ValueError(f"{text}: listed twice")
            names.append(name)
        return names

    @field_validator("hold")
    @classmethod
    def _hold(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s: requests would fail while the app switches")
        return value

    @model_validator(mode="after")
    def _tls_needs_hosts(self) -> Proxy:
        if self.tls == "internal" and not self.hosts:
            raise ValueError("tls: internal needs hosts (certificates are issued for names)")
        return self

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def ports(self) -> tuple[int, int]:
        """The pair ``start-first`` alternates on: ``port`` (blue) and ``port + 1`` (green)."""
        return self.port, self.port + 1


def _url_port(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


class CommitVerification(BaseModel):
    """Which keys may sign a deployed commit: SSH (git's allowed signers file) or GnuPG."""

    model_config = ConfigDict(extra="forbid")

    allowed_signers: Path | None = None  # gpg.ssh.allowedSignersFile format
    gpg_keyring: Path | None = None  # exported public keys (binary or armoured)
    range: bool = False  # every commit since the deployed one, not only the deployed one

    @field_validator("allowed_signers", "gpg_keyring")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"{value} must be an absolute host path")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> CommitVerification:
        if (self.allowed_signers is None) == (self.gpg_keyring is None):
            raise ValueError("set exactly one of allowed_signers (SSH) or gpg_keyring (GnuPG)")
        return self

    @property
    def keys(self) -> Path:
        # Exactly one of them is set (the validator); a bare Path() never reaches a check.
        return self.allowed_signers or self.gpg_keyring or Path()


class Window(BaseModel):
    """One deploy-window rule: ``{deny: "Mon-Fri 08:00-18:00", tz: Europe/Berlin}``."""

    model_config = ConfigDict(extra="forbid")

    allow: str | None = None
    deny: str | None = None
    tz: str = "UTC"

    @model_validator(mode="after")
    def _one_rule(self) -> Window:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("set exactly one of allow or deny")
        self.rule()  # ValueError with the reason when the span or the zone is wrong
        return self

    def rule(self) -> Rule:
        if self.allow is not None:
            return parse_rule("allow", self.allow, self.tz)
        return parse_rule("deny", self.deny or "", self.tz)


class Verify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commits: CommitVerification | None = None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_host_name(value: str) -> str:
    if not HOST_NAME.match(value):
        raise ValueError("a host name: lowercase letters, digits and '-' (max 63)")
    return value


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    repo: str
    branch: str = "main"
    path: str = "."
    compose_file: str = "docker-compose.yml"
    project: str
    service: str
    env_files: list[Path] = []
    images: list[str] = []
    tags: str = "glob:*"
    health: Health = Health()
    backup: Backup = Backup()
    # recreate: stop, start, gate (single-writer data); start-first: the new version on the
    # other port of proxy.ports, gated there, then switched to (data elsewhere).
    strategy: Literal["recreate", "start-first"] = "recreate"
    notify: Notify = Notify()
    deploy_timeout: Duration = 1800.0
    stop_timeout: Duration = 30.0
    proxy: Proxy | None = None
    sync: Sync = Sync()
    verify: Verify = Verify()
    # When automatic changes may start; a person's request and a heal pass at any time.
    windows: list[Window] = []
    approve: Approve = Approve()
    # The Docker host it runs on: its work goes to the workers started with
    # `rollhook worker --host <host>` (README "Several hosts").
    host: str = LOCAL_HOST

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host_name(value)

    @field_validator("name", "project")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (max 63)")
        return value

    @field_validator("repo")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        parts = urlsplit(value)
        # In the URL, a credential shows in git's command line (readable by every local
        # user), its config and its messages. Over HTTP the user part alone is one too
        # (https://<token>@host/...); an SSH user name (git@) is only a login name.
        if parts.password is not None or (
            parts.scheme in {"http", "https", "git"} and parts.username is not None
        ):
            raise ValueError(
                "put credentials in ROLLHOOK_GIT_TOKEN, not in the URL (user:password@ or token@)"
            )
        scheme = parts.scheme
        if scheme not in REPO_SCHEMES and not re.match(r"^[\w.-]+@[\w.-]+:", value):
            raise ValueError(f"must be a git URL: {REPO_FORMS}")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not _BRANCH.match(value) or ".." in value or value.endswith((".lock", "/")):
            raise ValueError("not a valid branch name")
        return value

    @field_validator("compose_file")
    @classmethod
    def _compose_file(cls, value: str) -> str:
        if PurePosixPath(value).name != value or value in {".", ".."}:
            raise ValueError("a file name in the target's folder, without a path")
        return value

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a path inside the repository (no leading '/', no '..')")
        return str(path)

    @field_validator("env_files")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_absolute():
                raise ValueError(f"{path} must be an absolute host path")
        return value

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        for text in value:
            ref = parse_reference(text)
            if ref.tag or ref.digest:
                raise ValueError(f"{text}: list repositories without a tag or digest")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: str) -> str:
        TagPolicy(value)
        return value

    @model_validator(mode="after")
    def _health_fits(self) -> Target:
        if self.health.settle >= self.health.timeout:
            raise ValueError("health.settle must be shorter than health.timeout")
        return self

    @property
    def follows_newer_tags(self) -> bool:
        """Whether polling looks for newer tags: only under a policy the operator wrote
        (``tags:`` left at its default ``glob:*`` would follow any tag at all)."""
        return "tags" in self.model_fields_set and self.tag_policy.kind in {"glob", "semver"}

    @model_validator(mode="after")
    def _start_first_fits(self) -> Target:
        """What the targets file alone can say about ``start-first``; the compose file's
        mounts are checked when a deployment plans (``workers.plan``)."""
        if self.strategy != "start-first":
            return self
        if self.proxy is None:
            raise ValueError(
                "strategy: start-first needs proxy: the proxy moves the traffic from one "
                "version's port to the other's"
            )
        if self.proxy.port + 1 > 65535:
            raise ValueError("strategy: start-first uses proxy.port and proxy.port + 1")
        if "enabled" in self.backup.model_fields_set and self.backup.enabled:
            raise ValueError(
                "strategy: start-first runs two versions at once, so the service must not "
                "mount data rollhook backs up (both would write it); use recreate, or "
                "backup.enabled: false when its data lives elsewhere"
            )
        # Nothing of its own to back up: the default for start-first is no backup.
        self.backup = self.backup.model_copy(update={"enabled": False})
        url = self.health.url
        if url is not None and _url_port(url) != self.proxy.port:
            raise ValueError(
                f"health.url: start-first gates each version on its own port; the url must "
                f"use proxy.port ({self.proxy.port}), which rollhook swaps for the other one"
            )
        return self

    # -- derived ----------------------------------------------------------------------

    @property
    def deploy_windows(self) -> Windows:
        return Windows(tuple(window.rule() for window in self.windows))

    @property
    def tag_policy(self) -> TagPolicy:
        return TagPolicy(self.tags)

    @property
    def image_refs(self) -> list[ImageRef]:
        return [parse_reference(text) for text in self.images]

    def watches_image(self, ref: ImageRef) -> bool:
        return any(own.name == ref.name for own in self.image_refs)

    def watches_path(self, changed: str) -> bool:
        """Whether a changed repository file lies under this target's folder."""
        if self.path == ".":
            return True
        return PurePosixPath(changed).is_relative_to(PurePosixPath(self.path))

    @property
    def repo_key(self) -> str:
        return repo_key(self.repo)


def repo_key(url: str) -> str:
    """A clone URL reduced to ``host/owner/name`` so https and ssh forms compare equal."""
    text = url.strip()
    if m := re.match(r"^[\w.-]+@([\w.-]+):(.+)$", text):
        host, path = m.group(1), m.group(2)
    else:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
        if parts.port and parts.scheme in {"http", "https"}:
            host = f"{host}:{parts.port}"
    path = path.strip("/").removesuffix(".git").lower()
    return f"{host.lower()}/{path}" if host else path


def _explain(name: str, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        prefix = f"targets.{name}" + (f".{where}" if where else "")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required"
        lines.append(f"{prefix}: {message}")
    return lines


def several_hosts_problems(
    targets: Mapping[str, Target], *, embedded_broker: bool, sqlite_records: bool
) -> list[str]:
    """More than one host needs a broker and a records database every host reaches: one
    line each for what to use instead (README "Several hosts")."""
    names = sorted({target.host for target in targets.values()})
    if len(names) < 2:
        return []
    several = f"targets name {len(names)} hosts ({', '.join(names)})"
    problems = []
    if embedded_broker:
        problems.append(
            f"ROLLHOOK_REDIS_URL: {several}; the embedded broker is one machine's file: "
            "set ROLLHOOK_REDIS_URL to a Redis every host reaches (rediss://...)"
        )
    if sqlite_records:
        problems.append(
            f"ROLLHOOK_DATABASE_URL: {several}; SQLite records are one machine's file: "
            "set ROLLHOOK_DATABASE_URL to a PostgreSQL every host reaches "
            "(postgresql+psycopg://...?sslmode=verify-full)"
        )
    return problems


def parse_targets(text: str) -> tuple[dict[str, Target], list[str]]:
    """Parse the targets file; return the targets and a list of one-line problems."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        return {}, [f"config: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), dict):
        return {}, ["config: expected a mapping with a 'targets:' mapping"]
    unknown = set(doc) - {"targets"}
    problems = [f"config.{key}: unknown key" for key in sorted(unknown)]
    targets: dict[str, Target] = {}
    for name, body in doc["targets"].items():
        if not isinstance(body, dict):
            problems.append(f"targets.{name}: expected a mapping")
            continue
        try:
            targets[name] = Target(name=str(name), **body)
        except ValidationError as exc:
            problems.extend(_explain(str(name), exc))
        except (ReferenceError, ValueError) as exc:
            problems.append(f"targets.{name}: {exc}")
    projects: dict[str, str] = {}
    for target in targets.values():
        if target.project in projects:
            problems.append(
                f"targets.{target.name}.project: {target.project!r} is also used by "
                f"{projects[target.project]}"
            )
        projects[target.project] = target.name
    problems.extend(_proxy_clashes(targets))
    problems.extend(_pair_clashes(targets))
    return targets, problems


GREEN_SUFFIX = "-green"


def _pair_clashes(targets: dict[str, Target]) -> list[str]:
    """Two targets on one app port, or a start-first pair reaching into another's port or
    compose project (the green one is ``<project>-green`` on ``proxy.port + 1``)."""
    problems: list[str] = []
    ports: dict[int, str] = {}
    projects = {t.project: t.name for t in targets.values()}
    for target in targets.values():
        if target.proxy is None:
            continue
        pair = target.strategy == "start-first"
        for port in target.proxy.ports if pair else (target.proxy.port,):
            if port in ports:
                problems.append(
                    f"targets.{target.name}.proxy.port: {port} is also used by "
                    f"targets.{ports[port]}"
                    + (" (start-first uses port and port + 1)" if pair else "")
                )
            ports[port] = target.name
        green = f"{target.project}{GREEN_SUFFIX}"
        if pair and green in projects:
            problems.append(
                f"targets.{target.name}.project: start-first also uses {green!r}, the project "
                f"of targets.{projects[green]}"
            )
    return problems


def _proxy_clashes(targets: dict[str, Target]) -> list[str]:
    """Targets behind the proxy that would share one socket: Caddy binds each listen once."""
    problems: list[str] = []
    seen: list[tuple[str, Proxy]] = []
    for target in targets.values():
        mine = target.proxy
        if mine is None:
            continue
        where = f"targets.{target.name}.proxy"
        for name, theirs in seen:
            if theirs.listen_port != mine.listen_port:
                continue
            if theirs.listen != mine.listen:
                problem = (
                    f"{where}.listen: port {mine.listen_port} is also on {theirs.listen} "
                    f"(targets.{name}); use the same listen address to share it"
                )
            elif not mine.hosts or not theirs.hosts:
                problem = (
                    f"{where}.hosts: {mine.listen} is shared with targets.{name}; "
                    "both must name their hosts"
                )
            elif shared := sorted(set(mine.hosts) & set(theirs.hosts)):
                problem = f"{where}.hosts: {', '.join(shared)} also served by targets.{name}"
            else:
                continue
            problems.append(problem)
            break
        seen.append((target.name, mine))
    return problems


def load_targets(path: Path) -> dict[str, Target]:
    """Load and validate the targets file, or raise ConfigError with every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"ROLLHOOK_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"ROLLHOOK_CONFIG: {path} is not UTF-8 text (byte {exc.start})") from None
    targets, problems = parse_targets(text)
    if problems:
        raise ConfigError("; ".join(problems))
    return targets


def host_of(targets: Mapping[str, Target], name: str) -> str:
    """The host of target ``name``; an unknown name is the local host's."""
    target = targets.get(name)
    return target.host if target is not None else LOCAL_HOST
