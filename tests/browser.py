"""A real browser for tests: Debian's headless Chromium, driven over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: JSON messages separated by NUL
bytes on file descriptors 3 and 4), so no websocket client and no browser download is needed:
the standard library and ``/usr/bin/chromium`` are enough.

    with Chromium.launch() as browser:
        page = browser.open("http://127.0.0.1:8080/dashboard/")
        page.wait_for("document.body.innerText.includes('Trials')")
        page.screenshot(path)
        assert not page.errors

``page.errors`` collects console errors, uncaught exceptions and browser log errors;
``page.requests`` every URL the page asked for (to prove a page works offline).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--window-size=1400,1000",
    "--remote-debugging-pipe",
)


def chromium_path() -> str | None:
    """The Chromium binary: ``$HPSEARCH_TEST_CHROMIUM``, else Debian's, else one on PATH."""
    candidates = [os.environ.get("HPSEARCH_TEST_CHROMIUM", ""), *CHROMIUM_PATHS, shutil.which("chromium") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_chromium() -> str:
    """The Chromium binary; skips the test when there is none, fails instead under ``$CI``."""
    path = chromium_path()
    if path is None:
        reason = "no Chromium (apt-get install chromium, or set HPSEARCH_TEST_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return path


def artifacts_dir() -> Path:
    """Where tests keep files for people to look at: ``$HPSEARCH_TEST_ARTIFACTS``, else tests/artifacts."""
    path = Path(os.environ.get("HPSEARCH_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class BrowserError(RuntimeError):
    """The browser died, answered with an error, or a wait timed out."""


class Chromium:
    """One headless Chromium process and its DevTools pipe; a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int, profile: str) -> None:
        self._process = process
        self._to, self._from = to_browser, from_browser
        self._profile = profile
        self._buffer = b""
        self._next_id = 0
        self._pages: dict[str, Page] = {}

    @classmethod
    def launch(cls, binary: str | None = None) -> Chromium:
        binary = binary or require_chromium()
        profile = tempfile.mkdtemp(prefix="hpsearch-chromium-")
        to_read, to_write = os.pipe()
        from_read, from_write = os.pipe()
        # The shell moves the pipes to fds 3 and 4, where --remote-debugging-pipe expects them.
        command = ["sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null', "sh", binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        process = subprocess.Popen(command, stdin=to_read, stdout=from_write, stderr=subprocess.DEVNULL)
        os.close(to_read)
        os.close(from_write)
        browser = cls(process, to_write, from_read, profile)
        try:
            browser.call("Browser.getVersion", timeout=30)
        except BaseException:
            browser.close()
            raise
        return browser

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile go to their pages."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply is None:
                raise BrowserError(f"no answer to {method} from Chromium in {timeout:.0f} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def pump(self, seconds: float) -> None:
        """Read the events that arrive within ``seconds`` (while waiting without a command)."""
        deadline = time.monotonic() + seconds
        while self._receive(deadline, "events") is not None:
            pass

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any] | None:
        """The next message (events are handed to their page on the way), or None at the deadline."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                return None
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self._process.poll()}) while waiting for {waiting_for}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message = json.loads(raw)
        page = self._pages.get(message.get("sessionId", ""))
        if page is not None and "method" in message:
            page._event(message["method"], message.get("params", {}))
        return message

    def open(self, url: str, timeout: float = 30) -> Page:
        """A new tab showing ``url``, loaded (the load event fired), with events recorded from the start."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session)
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session=session)
        page.goto(url, timeout)
        return page

    def close(self) -> None:
        try:
            if self._process.poll() is None:
                try:
                    self.call("Browser.close", timeout=5)
                except (BrowserError, OSError):
                    pass
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            os.close(self._to)
            os.close(self._from)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Page:
    """One tab: navigation, JavaScript, screenshots, and what went wrong while it ran."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self._browser = browser
        self._session = session
        self._loaded = False
        self.errors: list[str] = []
        self.requests: list[str] = []

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Page.loadEventFired":
            self._loaded = True

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self._browser.call(method, params, self._session, timeout)

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait for the load event."""
        self._loaded = False
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading in {timeout:.0f} s")
            self._browser.pump(0.1)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20, interval: float = 0.2) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:.0f} s waiting for {expression!r}")
            self._browser.pump(interval)

    def text(self) -> str:
        """What the page shows as text."""
        return self.evaluate("document.body.innerText")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    """One headless Chromium for the tests of a module (import this fixture into the module)."""
    with Chromium.launch() as chromium:
        yield chromium
