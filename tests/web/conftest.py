"""A live ``python server.py`` on a free loopback port, and headless Chromium from the system driven by Selenium.

The browser is the system's (``apt-get install chromium chromium-driver``; ``$GRAPHFLOW_CHROMIUM`` and
``$GRAPHFLOW_CHROMEDRIVER`` point elsewhere): nothing here downloads one. Without it the browser tests skip and
say what is missing, unless ``$GRAPHFLOW_REQUIRE_BROWSER`` is set (``.ci/run`` sets it): then they fail.
Screenshots go to ``$GRAPHFLOW_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the checkout).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or a sentence saying what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    chromium = os.environ.get("GRAPHFLOW_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = os.environ.get("GRAPHFLOW_CHROMEDRIVER") or shutil.which("chromedriver")
    missing = [what for what, path in (("no Chromium browser (chromium, chromium-browser or google-chrome)", chromium),
                                       ("no chromedriver", driver)) if not path]
    if missing:
        return f"{' and '.join(missing)} on PATH: apt-get install chromium chromium-driver"
    return chromium, driver


@pytest.fixture
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if isinstance(found, str):
        if os.environ.get("GRAPHFLOW_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests required ($GRAPHFLOW_REQUIRE_BROWSER) but {found}")
        pytest.skip(f"browser tests skipped: {found}")
    return found


@pytest.fixture
def browser(browser_paths):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_window_size(1280, 800)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts() -> Path:
    folder = Path(os.environ.get("GRAPHFLOW_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``python server.py`` in a subprocess; ``restart()`` stops it and starts it again on the same port and data."""

    def __init__(self, data_dir: Path, log: Path, *args: str):
        self.data_dir, self.log, self.args = data_dir, log, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "server.py", "--port", str(self.port),
                                             "--data-dir", str(self.data_dir), *self.args],
                                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server.py exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server.py did not answer /health in 120 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def live_server(tmp_path):
    servers: list[LiveServer] = []

    def start(*args: str) -> LiveServer:
        servers.append(LiveServer(tmp_path / f"data{len(servers)}", tmp_path / f"server{len(servers)}.log", *args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
