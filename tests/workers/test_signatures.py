"""Signed commits, with real keys: SSH signatures made by git through ssh-keygen, GnuPG ones
made by gpg in a throwaway home, checked by ``CommitSignatures`` on a plain repository and
then through whole deployments on the engine (an unsigned commit never touches the app).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollhook.records import notifications
from rollhook.targets import CommitVerification, Verify
from tests.harness.gitserver import git_env
from tests.workers.deployer import Deployer
from workers.errors import OperatorError
from workers.notify import Notifiers, deliver
from workers.notify.console import ConsoleNotifier
from workers.signatures import CommitSignatures, UnsignedCommit, key_problems


@dataclass(frozen=True)
class Keys:
    """An allowed key and another one, of one kind, with the git config that signs by each."""

    rule: dict[str, Any]  # verify.commits, as in the targets file
    allowed: tuple[str, ...]
    other: tuple[str, ...]


def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


@pytest.fixture
def ssh_keys(tmp_path: Path) -> Keys:
    for name in ("allowed", "other"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name))
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ops@example.test {(tmp_path / 'allowed.pub').read_text()}")

    def signing(name: str) -> tuple[str, ...]:
        return ("-c", "gpg.format=ssh", "-c", f"user.signingKey={tmp_path / name}")

    return Keys({"allowed_signers": str(signers)}, signing("allowed"), signing("other"))


def _gpg_home(root: Path, name: str) -> tuple[Path, str]:
    """A GnuPG home with one new signing key; (a gpg wrapper for git, the fingerprint)."""
    home = root / f"gpg-{name}"
    home.mkdir(mode=0o700)
    gpg = ("gpg", "--homedir", str(home), "--batch")
    _run(*gpg, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.test>",
         "ed25519", "sign", "never")  # fmt: skip
    colons = _run(*gpg, "--list-keys", "--with-colons")
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line[:3] == "fpr")
    wrapper = root / f"gpg-{name}.sh"
    wrapper.write_text(f'#!/bin/sh\nexec gpg --homedir {home} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, fingerprint


@pytest.fixture
def gpg_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keys:
    signing = {}
    for name in ("allowed", "other"):
        wrapper, fingerprint = _gpg_home(tmp_path, name)
        signing[name] = ("-c", f"gpg.program={wrapper}", "-c", f"user.signingKey={fingerprint}")
    keyring = tmp_path / "allowed.asc"
    keyring.write_text(_run("gpg", "--homedir", str(tmp_path / "gpg-allowed"), "--armor",
                            "--export"))  # fmt: skip
    # The worker's own GnuPG home holds the other key: it must not count.
    monkeypatch.setenv("GNUPGHOME", str(tmp_path / "gpg-other"))
    return Keys({"gpg_keyring": str(keyring)}, signing["allowed"], signing["other"])


@pytest.fixture(params=["ssh", "gpg"])
def keys(request: pytest.FixtureRequest) -> Keys:
    keys: Keys = request.getfixturevalue(f"{request.param}_keys")
    return keys


# -- the check on a plain repository -------------------------------------------------------


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        _run("git", "init", "-q", "-b", "main", str(path), env=git_env())

    def _git(self, *args: str) -> str:
        return _run("git", "-C", str(self.path), *args, env=git_env()).strip()

    def commit(self, signing: tuple[str, ...] = ()) -> str:
        sign = ["-S"] if signing else []
        self._git(*signing, "-c", "user.name=t", "-c", "user.email=t@example.test",
                  "commit", "-q", "--allow-empty", *sign, "-m", "change")  # fmt: skip
        return self._git("rev-parse", "HEAD")


def test_only_a_commit_signed_by_an_allowed_key_passes(tmp_path: Path, keys: Keys) -> None:
    repo = Repo(tmp_path / "repo")
    check = CommitSignatures(CommitVerification(**keys.rule), repo.path / ".git")
    signed = repo.commit(keys.allowed)
    check.verify([signed])

    unsigned = repo.commit()
    with pytest.raises(UnsignedCommit, match=rf"commit {unsigned[:7]} is not signed by an "
                       r"allowed key \(it carries no signature\)"):  # fmt: skip
        check.verify([unsigned])

    other = repo.commit(keys.other)
    with pytest.raises(UnsignedCommit, match=rf"commit {other[:7]} .*not from a key in"):
        check.verify([other])
    # A list fails on its first bad commit, whatever comes after it.
    with pytest.raises(UnsignedCommit, match=unsigned[:7]):
        check.verify([signed, unsigned, other])


def test_a_missing_or_empty_key_file_is_the_operators_problem(tmp_path: Path) -> None:
    missing = CommitVerification(allowed_signers=tmp_path / "nope")
    assert key_problems(missing) == [
        f"verify.commits.allowed_signers: {tmp_path / 'nope'} does not exist on this host "
        "(or is not a file)"
    ]
    empty = tmp_path / "signers"
    empty.write_text("# nobody yet\n\n")
    assert key_problems(CommitVerification(allowed_signers=empty)) == [
        f"verify.commits.allowed_signers: {empty} names no signer"
    ]
    garbage = tmp_path / "keyring.asc"
    garbage.write_text("not a key\n")
    assert key_problems(CommitVerification(gpg_keyring=garbage)) == [
        f"verify.commits.gpg_keyring: {garbage} holds no public key gpg can import"
    ]
    with pytest.raises(OperatorError, match="cannot read"):
        CommitSignatures(missing, tmp_path).verify(["0" * 40])


def test_good_key_files_raise_no_problem(ssh_keys: Keys, gpg_keys: Keys) -> None:
    for keys in (ssh_keys, gpg_keys):
        assert key_problems(CommitVerification(**keys.rule)) == []


# -- whole deployments on the engine ---------------------------------------------------------


def _told(deployer: Deployer, caplog: pytest.LogCaptureFixture) -> None:
    """Deliver notifications as a worker would, to the console channel."""
    notifiers = Notifiers.of(ConsoleNotifier())
    deployer.ctx.notifiers = notifiers
    deployer.ctx.send = lambda task, args: deliver(deployer.records, notifiers, args[0])
    caplog.set_level(logging.INFO, logger="rollhook.notify.console")


@pytest.mark.engine
def test_an_unsigned_or_foreign_commit_is_refused_and_the_app_keeps_serving(
    make_deployer: Callable[..., Deployer], ssh_keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    deployer = make_deployer(verify={"commits": ssh_keys.rule})
    _told(deployer, caplog)
    good = deployer.commit("1.0.0", signing=ssh_keys.allowed)
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    assert first.commit == good
    assert "1 commit(s) signed by an allowed key" in first.log

    for signing in ((), ssh_keys.other):
        bad = deployer.commit("2.0.0", signing=signing)
        refused = deployer.deploy()
        assert refused.status == "failed"
        assert refused.reason is not None
        assert refused.reason.startswith(f"commit {bad[:7]} is not signed by an allowed key")
        assert [(s["name"], s["outcome"]) for s in refused.steps] == [("sync", "failed")]
        assert deployer.app_version() == "1.0.0"  # nothing stopped, nothing exported
        assert not deployer.dirs.release(bad).exists()
        assert deployer.state().current_deployment_id == first.id
        # People hear of it, though the app was never touched.
        with deployer.records.begin() as conn:
            rows = notifications.of_deployments(conn, [refused.id])[refused.id]
        assert [(row["channel"], row["status"]) for row in rows] == [("console", "delivered")]
        told = [line for line in caplog.messages if refused.id in line]
        assert told and "FAILED at sync" in told[-1], caplog.messages


@pytest.mark.engine
def test_with_range_every_commit_since_the_deployed_one_must_be_signed(
    make_deployer: Callable[..., Deployer], gpg_keys: Keys
) -> None:
    deployer = make_deployer(verify={"commits": {**gpg_keys.rule, "range": True}})
    deployer.commit("1.0.0", signing=gpg_keys.allowed)
    first = deployer.deploy()
    assert first.status == "succeeded", first.log

    sneaked = deployer.commit("1.0.0", "unsigned in between", compose_note="x")
    deployer.commit("2.0.0", signing=gpg_keys.allowed)
    refused = deployer.deploy()
    assert refused.status == "failed"
    assert refused.reason is not None
    assert refused.reason.startswith(f"commit {sneaked[:7]} is not signed by an allowed key")
    assert deployer.app_version() == "1.0.0"

    # Without range only the deployed commit counts: the same history deploys.
    deployer.target.verify.commits.range = False  # type: ignore[union-attr]
    deployed = deployer.deploy(manual=True)
    assert deployed.status == "succeeded", deployed.log
    assert deployer.app_version() == "2.0.0"


@pytest.mark.engine
def test_a_rollback_to_an_unsigned_commit_is_refused_too(
    make_deployer: Callable[..., Deployer], ssh_keys: Keys
) -> None:
    deployer = make_deployer()
    unsigned = deployer.commit("1.0.0")
    old = deployer.deploy()
    assert old.status == "succeeded", old.log
    deployer.commit("2.0.0", signing=ssh_keys.allowed)
    assert deployer.deploy().status == "succeeded"

    # Signing is required from now on: going back to the unsigned release is deploying it.
    deployer.target.verify = Verify(commits=CommitVerification(**ssh_keys.rule))
    refused = deployer.deploy(action="rollback", rollback_to=old.id, manual=True)
    assert refused.status == "failed"
    assert refused.reason is not None
    assert refused.reason.startswith(f"commit {unsigned[:7]} is not signed by an allowed key")
    assert deployer.app_version() == "2.0.0"


@pytest.mark.engine
def test_a_range_longer_than_the_cap_is_refused_not_checked_in_part(
    make_deployer: Callable[..., Deployer], gpg_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.rollout.MAX_RANGE_COMMITS", 2)
    monkeypatch.setattr("workers.signatures.MAX_RANGE_COMMITS", 2)
    deployer = make_deployer(verify={"commits": {**gpg_keys.rule, "range": True}})
    deployed = deployer.commit("1.0.0", signing=gpg_keys.allowed)
    assert deployer.deploy().status == "succeeded"

    # Three signed commits since the deployed one: every one signed, still one too many.
    for note in ("a", "b"):
        deployer.commit("1.0.0", f"signed {note}", compose_note=note, signing=gpg_keys.allowed)
    head = deployer.commit("2.0.0", signing=gpg_keys.allowed)
    refused = deployer.deploy()
    assert refused.status == "failed"
    assert refused.reason is not None
    assert refused.reason.startswith(
        f"verify.commits.range: more than 2 commits from {deployed[:7]} to {head[:7]}"
    ), refused.reason
    assert deployer.app_version() == "1.0.0"
