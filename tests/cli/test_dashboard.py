"""`evolve dashboard` and `evolve report` in a real headless browser (Debian's chromium
and chromedriver, driven by selenium): pages load without console errors, the charts
carry what `status --json` says, the lineage explorer clicks through to the parent,
the page follows a running life cycle, and the report works offline from one file.
Screenshots go to $EVOLVE_TEST_ARTEFACTS (default /tmp/evolve-test-artefacts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evolve_ai.testing import (
    FAST_SETTINGS,
    evolve_command,
    init_workspace,
    run_evolve,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
)
from tests.helpers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - the dev extra installs it
    webdriver = None  # type: ignore[assignment]

MISSING = ("no headless browser: needs Debian's chromium and chromium-driver "
           "(apt-get install chromium chromium-driver) and selenium (the dev extra)")
if not (CHROMIUM and DRIVER and webdriver is not None):
    if os.environ.get("EVOLVE_REQUIRE_BROWSER"):  # .ci/run installed them: a failure
        raise RuntimeError(MISSING)
    pytest.skip(MISSING, allow_module_level=True)

ARTEFACTS = Path(os.environ.get("EVOLVE_TEST_ARTEFACTS", "/tmp/evolve-test-artefacts"))


@pytest.fixture
def browser() -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "true"  # selenium must not fetch a driver from the internet
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1600",
                     # every name but loopback fails to resolve: nothing leaves the machine
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def shoot(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def trace_length(driver: Any, chart: str, name: str) -> int | None:
    """How many points the trace ``name`` of the plotly chart ``#chart`` has (None: not
    drawn yet)."""
    length = driver.execute_script(
        "const div = document.getElementById(arguments[0]);"
        "const trace = div && div.data && div.data.find((t) => t.name === arguments[1]);"
        "return trace ? trace.x.length : null;", chart, name)
    return None if length is None else int(length)


def serve(root: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([*evolve_command(), "--root", str(root), "dashboard",
                             "--listen", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(base + "/data/overview", timeout=5):
                return True
        except OSError:
            assert proc.poll() is None, proc.communicate()
            return False

    wait_until(up, 30, "the dashboard")
    return proc, base


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after four generations, one agent's log made hostile."""
    root = init_workspace(tmp_path_factory.mktemp("dash") / "ws", 12, seed=8,
                          settings={**FAST_SETTINGS, "selection.every": 2})
    result = run_evolve(root, "life-cycle", "--generations", "4")
    assert result.returncode == 0, result.stderr
    return root


def child_with_parent(root: Path) -> dict[str, Any]:
    agents = json.loads(run_evolve(root, "agents", "--status", "all", "--json").stdout)
    return next(a for a in agents if a["parent"] is not None)


def test_the_dashboard_shows_what_status_says(evolved: Path, browser: Any) -> None:
    status = status_json(evolved)
    agent = child_with_parent(evolved)
    log = evolved / "logs" / "agents" / f"{agent['id']}.log"
    with log.open("a") as file:  # what an agent prints is shown, never run
        file.write("<script>document.title = 'owned'</script><img src=x onerror=alert(1)>\n")
    proc, base = serve(evolved)
    try:
        browser.get(base + "/")
        wait_until(lambda: trace_length(browser, "fitness", "mean") is not None, 30,
                   "the fitness chart")
        assert trace_length(browser, "fitness", "mean") == len(status["history"])
        assert trace_length(browser, "fitness", "max") == len(status["history"])
        for key in ("active", "disabled", "quarantined", "dead", "running"):
            shown = browser.find_element(By.ID, f"count-{key}").text
            assert shown == str(status["counts"][key]), key
        assert browser.find_element(By.ID, "generation").text == str(status["generation"])
        heat = browser.execute_script(
            "const d = document.getElementById('genes').data[0];"
            "return [d.y.length, d.x.length];")
        assert heat[0] >= 10 and heat[1] == status["generation"]  # a column per generation
        shoot(browser, "dashboard-overview")
        assert console_errors(browser) == []

        browser.get(f"{base}/agent/{agent['id']}")
        assert "owned" not in browser.title
        assert "<script>document.title" in browser.find_element(By.CSS_SELECTOR, "pre.log").text
        wait_until(lambda: browser.execute_script(
            "const d = document.querySelector('.agent-fitness');"
            "return !!(d && d.data);"), 30, "the agent's fitness chart")
        shoot(browser, "dashboard-agent")
        browser.find_element(By.CSS_SELECTOR, "a.parent-link").click()
        wait_until(lambda: browser.current_url.endswith(f"/agent/{agent['parent']}"), 30,
                   "the parent's page")
        assert agent["parent"] in browser.find_element(By.TAG_NAME, "h1").text
        shoot(browser, "dashboard-parent")
        assert console_errors(browser) == []
        browser.get(f"{base}/agent?id=ffffffff")  # the search box, an unknown id
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
        browser.find_element(By.LINK_TEXT, "Back to the population").click()
        wait_until(lambda: browser.current_url == base + "/", 30, "the way back")
        try:
            urllib.request.urlopen(base + "/data/overview?colour=red", timeout=10)
            raise AssertionError("an unknown parameter was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 400 and "unknown parameter 'colour'" in error.read().decode()
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_dashboard_follows_a_running_life_cycle(tmp_path: Path, browser: Any) -> None:
    root = init_workspace(tmp_path / "ws", 6, seed=9,
                          settings={**FAST_SETTINGS, "selection.every": 2})
    life = start_life_cycle(root)
    proc, base = serve(root)
    try:
        wait_until(lambda: status_json(root)["generation"] >= 1, 60, "a first generation")
        browser.get(base + "/")
        first = int(browser.find_element(By.ID, "generation").text)
        assert "life cycle running" in browser.find_element(By.CSS_SELECTOR, ".state").text
        # No reload: the page polls its data and redraws.
        wait_until(lambda: int(browser.find_element(By.ID, "generation").text) >= first + 2,
                   60, "the page's generation to move on")
        points = trace_length(browser, "fitness", "mean")
        assert points is not None and points >= first + 2
        assert console_errors(browser) == []
    finally:
        proc.terminate()
        proc.wait(30)
        stop_life_cycle(life)


def test_the_report_is_one_file_that_works_offline(evolved: Path, tmp_path: Path,
                                                   browser: Any) -> None:
    out = tmp_path / "report.html"
    result = run_evolve(evolved, "report", "--out", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", html)
    status = status_json(evolved)
    browser.get(out.as_uri())
    wait_until(lambda: trace_length(browser, "fitness", "mean") is not None, 30,
               "the fitness chart")
    assert trace_length(browser, "fitness", "mean") == len(status["history"])
    assert browser.find_element(By.ID, "count-active").text == str(status["counts"]["active"])
    sections = browser.find_elements(By.CSS_SELECTOR, "section.agent")
    assert 1 <= len(sections) <= 5
    charts = browser.execute_script(
        "return [...document.querySelectorAll('.agent-fitness')].filter((d) => d.data).length;")
    assert charts == len(sections)
    first = browser.find_element(By.CSS_SELECTOR, "#best a")  # the best agent: in the file
    anchor = first.get_attribute("href").split("#", 1)[1]
    assert anchor.startswith("agent-")
    first.click()
    assert browser.current_url.endswith("#" + anchor)
    shoot(browser, "report")
    assert console_errors(browser) == []
    again = run_evolve(evolved, "report", "--out", str(out))  # an existing file is replaced
    assert again.returncode == 0 and out.stat().st_size > 1_000_000


def test_a_dashboard_elsewhere_than_loopback_needs_a_token(evolved: Path) -> None:
    result = run_evolve(evolved, "dashboard", "--listen", "0.0.0.0:0")
    assert result.returncode == 1
    assert "needs api.token" in result.stderr and len(result.stderr.strip().splitlines()) == 1
