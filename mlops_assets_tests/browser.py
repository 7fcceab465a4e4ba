"""Headless Chromium for the tests' pages, driven through chromedriver's WebDriver HTTP API
(Debian's chromium and chromium-driver; .ci/run installs them)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.stack.process import ServerProcess, free_port, wait_until


def element_id(element: dict[str, str]) -> str:
    """The id in an element reference (its one value, under the W3C web element identifier)."""
    (value,) = element.values()
    return value


def webdriver(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["value"]


class Page:
    """One browser session: open a page, find elements by XPath, click, read text."""

    def __init__(self, base: str, session: str) -> None:
        self.base = base
        self.session = session

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return webdriver(self.base, method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def find(self, xpath: str) -> list[dict[str, str]]:
        return list(self.call("POST", "/elements", {"using": "xpath", "value": xpath}))

    def wait_for(self, xpath: str, what: str, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(xpath)
            if found:
                return found[0]
            time.sleep(0.25)
        raise AssertionError(f"{what} did not appear in {timeout:.0f} s ({xpath})")

    def click(self, element: dict[str, str]) -> None:
        self.call("POST", f"/element/{element_id(element)}/click", {})

    def type(self, element: dict[str, str], text: str) -> None:
        self.call("POST", f"/element/{element_id(element)}/value", {"text": text})

    def text(self, element: dict[str, str]) -> str:
        return str(self.call("GET", f"/element/{element_id(element)}/text"))

    def run(self, script: str, *args: Any) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})


@contextmanager
def browser(profile: Path, logs: Path, window: str = "1600,1000") -> Iterator[Page]:
    """A headless Chromium session; fails (not skips) without chromium and chromedriver."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail(
            "chromium and chromedriver are needed for the pages' tests "
            "(apt-get install chromium chromium-driver; .ci/run does)"
        )
    port = free_port()
    driver = ServerProcess(
        "chromedriver", [chromedriver, f"--port={port}"], logs / "chromedriver.log"
    )
    driver.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: webdriver(base, "GET", "/status")["ready"], "chromedriver", 30, driver.log
        )
        options = {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--window-size={window}",
                # This machine's network is closed: no background calls home.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                f"--user-data-dir={profile}",
            ],
        }
        capabilities = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        session = webdriver(base, "POST", "/session", capabilities)["sessionId"]
        try:
            yield Page(base, session)
        finally:
            webdriver(base, "DELETE", f"/session/{session}")
    finally:
        driver.stop()
