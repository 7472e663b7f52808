"""The dashboard in a real browser (headless chromium) against a whole rollhook (web,
worker and beat processes) deploying the anything-llm stand-in on the private engine:
sign in, watch deployments run live (one rolling itself back), roll back, pause and
resume, a forged form.

A screenshot of each page is saved for review under .test-run/screenshots/ (gitignored;
the test prints the folder: ``pytest -rP`` shows it); docs/screenshots/ holds a copy of
one run's for the README.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from rollhook.records.schema import TERMINAL_STATUSES
from tests.harness import INFRA_PATH, SERVICE, free_port, infra_files
from tests.harness.browser import headless_chromium, screenshot_dir, wait_until
from tests.stack import SECRETS, Stack, running_stack
from workers.compose import find_compose

pytestmark = pytest.mark.engine

TARGET = "llm"


class Shots:
    """Screenshots, numbered in the order they were taken."""

    def __init__(self, browser: WebDriver, root: Path) -> None:
        self.browser, self.root = browser, root
        root.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, name: str) -> None:
        path = self.root / f"{len(self.taken) + 1:02d}-{name}.png"
        assert self.browser.save_screenshot(str(path)), name
        self.taken.append(path)


def app_version(port: int) -> str | None:
    try:
        metrics = httpx.get(f"http://127.0.0.1:{port}/api/utils/metrics", timeout=2)
    except httpx.HTTPError:
        return None
    return str(metrics.json()["appVersion"]) if metrics.status_code == 200 else None


def text_of(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent"))


def press(browser: WebDriver, action: str) -> None:
    """A button of the target's section; then its answer, then the page it leads to."""
    section = f"#target-{TARGET}"
    browser.find_element(By.CSS_SELECTOR, f"{section} button.{action}").click()
    wait_until(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, f"{section} .answer"),
        what=f"the answer to {action}",
    )


def follow(browser: WebDriver) -> str:
    """From a 202's answer to the deployment it led to: the deployment's id."""
    answer = text_of(browser, f"#target-{TARGET} .answer")
    assert "202" in answer and "queued" in answer, answer
    browser.find_element(By.CSS_SELECTOR, f"#target-{TARGET} .answer a.follow").click()
    wait_until(browser, lambda b: "/ui/deployments/" in b.current_url, 60, "the deployment")
    return str(browser.current_url.rsplit("/", 1)[1])


def watch(browser: WebDriver, timeout: float = 180) -> list[dict[str, str]]:
    """Watch the deployment page until its record is final, without reloading it: what
    its status, steps and log were at each look (the last one final)."""
    browser.execute_script("window.rollhookNotReloaded = true;")
    looks: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            look = {
                "status": text_of(browser, "#deployment-status").strip(),
                "steps": text_of(browser, "#steps tbody"),
                "log": text_of(browser, "#log pre"),
            }
        except (NoSuchElementException, StaleElementReferenceException):
            continue  # swapped out between the reads: look again
        looks.append(look)
        if look["status"] in TERMINAL_STATUSES and not browser.find_elements(
            By.CSS_SELECTOR, ".live"
        ):
            break
        time.sleep(0.2)
    assert browser.execute_script("return window.rollhookNotReloaded === true;")
    assert looks[-1]["status"] in TERMINAL_STATUSES, looks[-1]
    return looks


def while_running(looks: list[dict[str, str]], part: str) -> list[str]:
    """The distinct values ``part`` had while the page said the deployment was running."""
    return list(dict.fromkeys(look[part] for look in looks if look["status"] == "running"))


def test_an_operator_in_a_real_browser(
    tmp_path: Path, git_server: Any, standin: Any, registry: Any, docker_host: str
) -> None:
    repo = git_server.create_repo("dashboard-infra")
    port = free_port()
    project = f"ui{uuid.uuid4().hex[:8]}"
    target = {
        "repo": repo.url,
        "branch": "main",
        "path": INFRA_PATH,
        "project": project,
        "service": SERVICE,
        "images": [f"{registry.host}/acme/anythingllm"],
        "health": {"url": f"http://127.0.0.1:{port}/api/ping", "timeout": "15s",
                   "settle": "2s", "interval": "0.2s"},
        "backup": {"keep": 3},
        # Webhooks only: the test's pushes make every deployment (a first poll would
        # deploy the branch head by itself before the test's own push).
        "sync": {"interval": 0},
    }  # fmt: skip
    config = yaml.safe_dump({"targets": {TARGET: target}})

    def commit(tag: str, boot_delay: str = "0.3") -> None:
        files = infra_files(standin.ref(tag), port, environment={"BOOT_DELAY": boot_delay})
        repo.commit(files, message=f"anything-llm {tag}")

    # A slow boot: the first deployment takes long enough to be watched.
    commit("1.0.0", boot_delay="4")
    env = {"DOCKER_HOST": docker_host}
    try:
        with (
            running_stack(tmp_path / "stack", config, env) as stack,
            headless_chromium(tmp_path / "chromium") as browser,
        ):
            shots = Shots(browser, screenshot_dir("operator-in-a-real-browser"))
            operate(stack, browser, shots, commit, port)
            console = browser.get_log("browser")
    finally:
        subprocess.run(
            [*find_compose(), "-p", project, "down", "--timeout", "2"],
            env={"DOCKER_HOST": docker_host, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=False,
            timeout=120,
        )
    # No page broke its Content-Security-Policy (Chromium reports each refusal here).
    refusals = [e["message"] for e in console if "Content Security Policy" in e["message"]]
    assert refusals == []
    assert len(shots.taken) == 12


def operate(stack: Stack, browser: WebDriver, shots: Shots, commit: Any, port: int) -> None:
    ui = f"{stack.url}/ui"

    # -- sign in: a wrong token is refused, the right one opens the targets -----------
    browser.get(ui)
    assert browser.current_url == f"{ui}/login"
    browser.find_element(By.NAME, "token").send_keys("not-the-api-token-0000")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(browser, lambda b: b.find_elements(By.ID, "message"), what="the refusal")
    assert "That is not the API token." in text_of(browser, "#message")
    assert browser.get_cookie("rollhook_session") is None
    shots.take("sign-in-refused")
    browser.find_element(By.NAME, "token").send_keys(SECRETS["ROLLHOOK_API_TOKEN"])
    browser.find_element(By.NAME, "name").send_keys("alice")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(browser, lambda b: b.current_url == ui, what="the targets page")
    assert "ui:alice" in text_of(browser, ".who")
    cookie = browser.get_cookie("rollhook_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "nothing deployed yet" in text_of(browser, f"#target-{TARGET} .version")
    shots.take("targets-before-the-first-deployment")

    # -- deploy and watch it live: its steps appear as they run ---------------------
    press(browser, "deploy")
    first_id = follow(browser)
    assert browser.find_elements(By.CSS_SELECTOR, ".live"), "the page should say it is live"
    time.sleep(1.5)
    shots.take("deployment-running-live")
    looks = watch(browser)
    final = looks[-1]
    assert final["status"] == "succeeded", final["log"]
    # Seen running, then its steps changed on the page (a step finishing, or the gate
    # passing as the record becomes final), without a reload.
    assert looks[0]["status"] in ("queued", "running"), looks[0]
    assert len({look["steps"] for look in looks}) >= 2, "the steps did not change on the page"
    assert len(final["log"]) > len(looks[0]["log"])
    assert final["log"] == stack.deployment(first_id)["log"]  # the record's, as stored
    assert "gate" in final["steps"] and "ok" in final["steps"]
    assert "by ui:alice" in text_of(browser, "#summary")
    assert app_version(port) == "1.0.0"
    shots.take("deployment-succeeded")

    # -- a broken release: its log grows as rollhook rolls it back by itself ---------
    commit("3.0.0-never-healthy")
    browser.get(ui)
    press(browser, "deploy")
    broken_id = follow(browser)
    looks = watch(browser)
    assert looks[-1]["status"] == "rolled_back", looks[-1]["log"]
    logs = while_running(looks, "log")
    assert len(logs) >= 2, "the log did not grow while the deployment ran"
    assert any("rolling back" in log for log in logs), logs
    assert looks[-1]["log"] == stack.deployment(broken_id)["log"]
    assert app_version(port) == "1.0.0"
    shots.take("deployment-rolled-back-by-itself")

    # -- a second version, then roll back to the first from the UI ------------------
    commit("2.0.0")
    browser.get(ui)
    press(browser, "deploy")
    second_id = follow(browser)
    assert watch(browser)[-1]["status"] == "succeeded"
    assert app_version(port) == "2.0.0"
    browser.get(ui)
    version = text_of(browser, f"#target-{TARGET} .version")
    assert "2.0.0" in version and "sha256:" in version
    shots.take("targets-on-2.0.0")
    press(browser, "rollback")
    back_id = follow(browser)
    back = watch(browser)[-1]
    assert back["status"] == "succeeded", back["log"]
    assert app_version(port) == "1.0.0"
    record = stack.deployment(back_id)
    assert record["kind"] == "rollback"
    assert record["trigger"]["actor"] == "ui:alice"
    assert record["requested"]["rollback_to"] == first_id
    shots.take("rollback-succeeded")

    # -- from 2.0.0's own page: back to that deployment --------------------------------
    browser.get(f"{ui}/deployments/{second_id}")
    browser.find_element(By.CSS_SELECTOR, "button.rollback").click()
    # A plain form post: redirected to what it queued, its event, then its deployment.
    wait_until(
        browser,
        lambda b: (
            "/ui/deployments/" in b.current_url and b.current_url.rsplit("/", 1)[1] != second_id
        ),
        60,
        "the rollback",
    )
    to_second = str(browser.current_url.rsplit("/", 1)[1])
    shots.take("rollback-to-2.0.0")
    assert watch(browser)[-1]["status"] == "succeeded"
    assert stack.deployment(to_second)["requested"]["rollback_to"] == second_id
    assert app_version(port) == "2.0.0"

    # -- pause with a reason, then resume ---------------------------------------------
    browser.get(ui)
    browser.find_element(By.CSS_SELECTOR, f"#target-{TARGET} input[name=reason]").send_keys(
        "incident 42"
    )
    press(browser, "pause")
    wait_until(
        browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#target-{TARGET} button.resume")
    )
    assert "incident 42" in text_of(browser, f"#target-{TARGET} .state")
    state = stack.api.get("/targets").json()["targets"][0]
    assert (state["paused"], state["paused_reason"]) == (True, "incident 42")
    shots.take("target-paused")
    press(browser, "resume")
    wait_until(
        browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#target-{TARGET} button.pause")
    )
    assert stack.api.get("/targets").json()["targets"][0]["paused"] is False

    # -- a forged form: its CSRF token changed in the page, then posted ----------------
    before = len(stack.deployments(TARGET))
    browser.execute_script(
        "const form = document.querySelector(arguments[0]);"
        "form.querySelector('input[name=csrf]').value = 'forged';"
        "form.submit();",  # a plain post, without htmx
        f"#target-{TARGET} form:first-of-type",
    )
    wait_until(browser, lambda b: "not from this session" in b.page_source, what="the 403 page")
    assert "Refused" in browser.title
    shots.take("forged-form-refused")
    assert len(stack.deployments(TARGET)) == before

    # -- the history, filtered by target ----------------------------------------------
    browser.get(ui)
    browser.find_element(By.LINK_TEXT, "Deployments").click()
    wait_until(browser, lambda b: b.current_url == f"{ui}/deployments")
    browser.find_element(By.CSS_SELECTOR, f".filter a[href$='target={TARGET}']").click()
    wait_until(browser, lambda b: b.current_url.endswith(f"target={TARGET}"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")
    assert len(rows) == 5 and to_second in str(rows[0].get_attribute("textContent"))
    shots.take("history")

    # -- sign out: the session is gone ---------------------------------------------------
    browser.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait_until(browser, lambda b: b.current_url == f"{ui}/login")
    assert browser.get_cookie("rollhook_session") is None
    shots.take("signed-out")
    browser.get(f"{ui}/deployments")
    assert browser.current_url == f"{ui}/login"
