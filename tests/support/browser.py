"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.

Flags, and why:

* ``--headless=new``, ``--no-sandbox`` (mandatory as root: without it the session is not
  created), ``--disable-gpu``, ``--disable-dev-shm-usage`` (CI containers have a 64 MB
  /dev/shm);
* ``--no-first-run``, ``--no-default-browser-check``, ``--disable-background-networking``,
  ``--disable-component-update``, ``--disable-sync``, ``--disable-quic``: the machines reach
  no network but the package registries, and Chromium's own background connections would be
  refused, many at a time, at every start;
* a fresh ``--user-data-dir`` per browser, so no cookie or cache outlives it.

The driver is always an explicit ``Service(/usr/bin/chromedriver)``: without one, Selenium
Manager tries to download a driver and report statistics before falling back to PATH.

    with Browser() as browser:
        browser.driver.get(url)
        browser.screenshot("signed-in")      # .screenshots/signed-in.png
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Self

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.managed import ManagedServer
from tests.support.procs import scratch_dir, system_command

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


def screenshot_dir() -> Path:
    """Where screenshots go: ``$AUTHZ_SCREENSHOTS``, else ``.screenshots/`` in the repo (kept
    after the run as evidence of what a person would have seen; not committed)."""
    explicit = os.environ.get("AUTHZ_SCREENSHOTS")
    return Path(explicit) if explicit else REPO_ROOT / ".screenshots"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk; ValueError if it is not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class Browser(ManagedServer):
    """A headless Chromium session; ``driver`` is the Selenium WebDriver."""

    def __init__(
        self,
        *,
        width: int = 1024,
        height: int = 768,
        page_timeout: float = 20.0,
        network_log: bool = False,
    ) -> None:
        """``network_log``: record every URL the browser requests (Chromium's performance
        log), for tests that need a URL a redirect chain passed through."""
        self.width, self.height = width, height
        self.page_timeout = page_timeout
        self.network_log = network_log
        self._requested: list[str] = []
        self._driver: webdriver.Chrome | None = None
        self.dir: Path | None = None

    @property
    def driver(self) -> webdriver.Chrome:
        if self._driver is None:
            raise RuntimeError("browser not started")
        return self._driver

    def start(self) -> Self:
        chromium = system_command("chromium", "chromium")
        chromedriver = system_command("chromedriver", "chromium-driver")
        self.dir = scratch_dir("chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={self.width},{self.height}")
        options.add_argument(f"--user-data-dir={self.dir / 'profile'}")
        if self.network_log:
            options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        service = Service(chromedriver, log_output=str(self.dir / "chromedriver.log"))
        try:
            self._driver = webdriver.Chrome(service=service, options=options)
        except BaseException:
            self.cleanup()
            raise
        self._driver.set_page_load_timeout(self.page_timeout)
        return self

    @property
    def version(self) -> str:
        """The browser version as the driver reports it."""
        return str(self.driver.capabilities.get("browserVersion", ""))

    def wait_for(self, css: str, timeout: float = 10.0) -> None:
        """Block until an element matching the CSS selector is on the page."""
        WebDriverWait(self.driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))

    def wait_for_url(self, prefix: str, timeout: float = 10.0) -> str:
        """Block until the current URL starts with ``prefix`` (redirect chains); return it."""
        try:
            WebDriverWait(self.driver, timeout).until(lambda d: d.current_url.startswith(prefix))
        except TimeoutException as exc:  # say where the redirect chain stopped
            raise TimeoutException(
                f"not at {prefix} after {timeout} s; at {self.driver.current_url}: "
                f"{self.driver.find_element(By.TAG_NAME, 'body').text[:300]!r}"
            ) from exc
        return str(self.driver.current_url)

    def requested_urls(self) -> list[str]:
        """Every URL requested so far (documents, redirects included), oldest first; needs
        ``network_log=True``."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self._requested.append(message["params"]["request"]["url"])
        return list(self._requested)

    def all_cookies(self) -> list[dict[str, Any]]:
        """Every cookie of every site, HttpOnly and path-scoped ones included (DevTools)."""
        found: list[dict[str, Any]] = self.driver.execute_cdp_cmd("Network.getAllCookies", {})[
            "cookies"
        ]
        return found

    def put_cookie(self, cookie: dict[str, Any]) -> None:
        """Set a cookie as a server could (HttpOnly included), e.g. one a test forged."""
        self.driver.execute_cdp_cmd("Network.setCookie", cookie)

    def fetch_status(self, path: str, *, method: str = "GET", xhr: bool = False) -> int:
        """The status a script on the current page gets for ``path`` (``fetch``, or an
        ``XMLHttpRequest`` with ``X-Requested-With`` as jQuery sends it)."""
        script = (
            "const [path, method, xhr, done] = arguments;"
            "if (xhr) { const r = new XMLHttpRequest(); r.open(method, path);"
            " r.setRequestHeader('X-Requested-With', 'XMLHttpRequest');"
            " r.onload = () => done(r.status); r.onerror = () => done(-1); r.send(); }"
            "else { fetch(path, {method, redirect: 'manual'})"
            ".then(r => done(r.type === 'opaqueredirect' ? 302 : r.status), () => done(-1)); }"
        )
        status = self.driver.execute_async_script(script, path, method, xhr)
        return int(status)

    def screenshot(self, name: str) -> Path:
        """Write the viewport as ``<screenshot_dir>/<name>.png``; return the path."""
        directory = screenshot_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        data = self.driver.get_screenshot_as_png()
        png_size(data)  # a real PNG or ValueError, never an empty file
        path.write_bytes(data)
        return path

    @property
    def started(self) -> bool:
        return self._driver is not None

    def stop(self) -> None:
        if self._driver is not None:
            try:
                self._driver.quit()  # ends Chromium and chromedriver
            finally:
                self._driver = None

    def diagnostics(self) -> str:
        return f"browser was at {self._driver.current_url}" if self._driver is not None else ""
