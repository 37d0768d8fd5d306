"""The dashboard in a real browser (Debian's chromium, driven by Selenium) during a real job.

Two datasites train a DP job while ``medsyft train --dashboard`` serves the page; the browser sees
both sites listed, the round counter go up and the charts fill with points, and ``/metrics``
answers in Prometheus' format. After the job one datasite is stopped: ``medsyft dashboard
--run-dir`` shows it as down and the other as up. Where chromium or its driver is missing the
tests skip, except under ``CI=true`` (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import approve_all, deploy_sites, free_port, write_job_toml

pytestmark = pytest.mark.slow

NAMES = ("north", "south")
ROUNDS = 4


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test needs {why} under CI=true")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if chromium is None or driver_path is None:
        _unavailable("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("dashboard")
    sites = deploy_sites(root, NAMES)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        site.publish(name="chest", shard=f"{i}/2", seed=0, synthetic_count=400)
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    job = write_job_toml(root, "watched", sites, [
        "[job]", 'dataset = "chest"', 'model = "small-cnn"', f"rounds = {ROUNDS}", "local_epochs = 1",
        "batch_size = 32", "min_sites = 2", "approval_timeout = 120", "round_timeout = 300",
        'run_dir = "watched"', "", "[privacy]", "dp = true", "he = false", "noise_multiplier = 1.0"])
    yield {"root": root, "sites": sites, "job": job}
    for site in sites:
        site.stop()


def _wait(what: str, check: Callable[[], Any], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # the page is between two renders
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _rows(browser: Any, table: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return [r for r in rows if r.get_attribute("data-site")]


def _points(browser: Any, chart: str) -> int:
    from selenium.webdriver.common.by import By

    return len(browser.find_elements(By.CSS_SELECTOR, f"#{chart} circle.point"))


def test_the_page_follows_a_real_job_live(federation: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    exe = Path(sys.executable).parent / "medsyft"
    train = subprocess.Popen([str(exe), "train", "--config", str(federation["job"]), "--quiet",
                              "--dashboard", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        run_dir = federation["root"] / "watched"
        _wait("the job's submission", lambda: (run_dir / "state.json").exists(), 180)
        browser.get(f"http://127.0.0.1:{port}/")
        def listed() -> list[Any]:
            rows = _rows(browser, "sites")
            return rows if len(rows) == 2 else []

        names = _wait("both sites listed", listed)
        assert {r.get_attribute("data-site") for r in names} == set(NAMES)
        approvals = browser.find_element(By.ID, "approvals")
        _wait("the pending approvals", lambda: "pending" in approvals.text, 60)
        approve_all(federation["sites"])
        _wait("both sites up", lambda: all(r.get_attribute("class") == "up" for r in _rows(browser, "sites")))
        counter = browser.find_element(By.ID, "round")

        def done() -> int:
            return int(counter.get_attribute("data-completed"))

        first = _wait("a first round", lambda: done() >= 1 and done())
        if first < ROUNDS:
            _wait("the round counter to go up", lambda: done() > first)
        # rounds 0 and 1 at least, for two sites and the pooled figure
        assert _wait("accuracy points", lambda: _points(browser, "chart-accuracy") >= 2 * 3)
        assert _points(browser, "chart-auc") > 0 and _points(browser, "chart-loss") > 0
        assert _wait("ε bars", lambda: _points(browser, "chart-epsilon") == 2)  # DP: one per hospital
        assert _points(browser, "chart-wire") >= 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            scraped = resp.read().decode()
        assert 'medsyft_site_up{site="north"} 1.0' in scraped
        assert 'medsyft_rounds{kind="total"} 4.0' in scraped
        _wait("the last round", lambda: counter.get_attribute("data-completed") == str(ROUNDS))
        shot = os.environ.get("MEDSYFT_DASHBOARD_SCREENSHOT")
        if shot:  # docs/img/dashboard.png is made this way
            time.sleep(2)
            browser.save_screenshot(shot)
        out, _ = train.communicate(timeout=300)
        assert train.returncode == 0, out
        assert f"dashboard: http://127.0.0.1:{port}/" in out
    finally:
        if train.poll() is None:
            train.kill()


def test_a_dead_site_is_shown_dead(federation: dict[str, Any], browser: Any) -> None:
    from orchestrator.dashboard.server import Dashboard, Server
    from orchestrator.dashboard.snapshot import site_addresses

    run_dir = federation["root"] / "watched"
    if not (run_dir / "sites.json").exists():
        pytest.skip("needs the run of the live test")
    federation["sites"][1].stop()  # south goes down
    server = Server(Dashboard(run_dir, site_addresses(run_dir), probe_interval=0.5), 0).start()
    try:
        browser.get(server.url)
        def health() -> dict[str, str]:
            return {r.get_attribute("data-site"): r.get_attribute("class") for r in _rows(browser, "sites")}

        _wait("south shown down and north up", lambda: health() == {"north": "up", "south": "down"}, 60)
        south = next(r for r in _rows(browser, "sites") if r.get_attribute("data-site") == "south")
        assert "down" in south.text and "does not answer" in south.text
    finally:
        server.stop()
