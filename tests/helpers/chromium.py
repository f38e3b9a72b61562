"""Drive headless Chromium over the Chrome DevTools Protocol, for tests of generated HTML pages.

The protocol runs over `--remote-debugging-pipe` (JSON messages ending in NUL on file descriptors 3 and 4),
so no websocket client and no network port are needed.

    with Chromium(tmp_path) as browser:                  # pytest.skip()s when chromium is not installed
        page = browser.open(path.as_uri())               # a tab; waits for the load event
        value = page.evaluate("document.title")          # awaits promises, returns plain values
        page.screenshot(tmp_path / "page.png")
        assert not browser.console_errors()              # console.error, uncaught exceptions, log errors
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--remote-debugging-pipe",
)
TIMEOUT_S = 30.0
# JavaScript lines for an `evaluate` script: `audio` is the page's first <audio>, its metadata loaded (or
# an error thrown when it does not decode)
FIRST_AUDIO_LOADED_JS = """  const audio = document.querySelector('audio');
  if (audio.readyState < 1) {
    await new Promise((ok, bad) => {
      audio.addEventListener('loadedmetadata', ok, { once: true });
      audio.addEventListener('error', () => bad(new Error('audio does not decode')), { once: true });
      audio.load();
    });
  }
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class CDPError(RuntimeError):
    pass


# The child moves the pipe ends to fds 3 and 4, where --remote-debugging-pipe expects them, then becomes
# chromium. (A shell can't do this portably: dash only knows single-digit fd numbers.)
_EXEC_WITH_FDS = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 10 or above, so that moving them onto 3 and 4 cannot clobber them."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class Chromium:
    def __init__(self, tmp: Path, window: tuple[int, int] = (1280, 1600)) -> None:
        exe = find_chromium()
        if exe is None:
            pytest.skip("chromium is not installed (Debian: apt install chromium)")
        profile = Path(tmp) / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        cmd_read, self._cmd = _high_pipe()  # we write commands; chromium reads them on fd 3
        self._out, out_write = _high_pipe()  # chromium writes replies and events on fd 4
        args = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            "about:blank",
        ]
        self.stderr_path = Path(tmp) / "chromium-stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WITH_FDS, str(cmd_read), str(out_write), *args],
                pass_fds=(cmd_read, out_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        os.close(cmd_read)
        os.close(out_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=5.0)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd, self._out):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise CDPError("timed out waiting for chromium")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise CDPError(f"chromium closed the pipe; stderr in {self.stderr_path}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to `self.events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(
        self, method: str, session: str | None = None, timeout_s: float = TIMEOUT_S
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    return event
            seen = len(self.events)
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)

    def open(self, url: str) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error log entries seen so far."""
        errors = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"{p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return errors


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        """Evaluate JS in the page (promises awaited) and return its JSON value."""
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            self.session,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(
                f"JS error: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        return result["result"].get("value")

    def screenshot(self, path: Path, max_height: int = 6000) -> Path:
        """Full-page PNG (up to `max_height` CSS pixels tall)."""
        size = self.browser.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        shot = self.browser.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            self.session,
        )
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)
