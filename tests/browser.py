"""Debian's headless Chromium for the dashboard tests (the `browser` fixture is in conftest.py): run it on a
page, and parse the DOM it dumped; or drive a page (click, type, read) through the DevTools protocol."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path


class Elements(HTMLParser):
    """Every start tag's attributes, by tag name (the DOM Chromium dumped)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=8000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


class DevToolsError(Exception):
    pass


class Page:
    """One headless Chromium tab driven through the Chrome DevTools Protocol over a pipe
    (`--remote-debugging-pipe`: commands in on fd 3, answers and events out on fd 4, each message JSON
    ended by a NUL; chromedevtools.github.io/devtools-protocol). No websocket client and no driver
    package: only what the browser itself speaks. `evaluate` runs JavaScript in the page, the same
    clicks and reads a person's browser would do through the DOM."""

    def __init__(self, browser: str, profile: Path):
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()

        def fds():  # in the child: its fd 3 reads our commands, its fd 4 writes its answers
            if from_chrome == 3:  # moved out of the way first, or the first dup2 would close it
                os.dup2(from_chrome, 5)
            os.dup2(to_chrome, 3)
            os.dup2(5 if from_chrome == 3 else from_chrome, 4)
            for fd in (3, 4):  # dup2 onto itself keeps close-on-exec (pipes are made with it): clear it
                os.set_inheritable(fd, True)

        self.proc = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False,
        )  # fmt: skip
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._id = 0
        self.session = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Runtime.enable")

    def send(self, method: str, timeout: float = 30, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # events on the way are not kept: the tests read the page's state, not its events
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            # select before each read: a Chromium that hangs must fail the test, not hang it.
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise DevToolsError("no answer from Chromium in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise DevToolsError("Chromium closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise awaited), as JSON."""
        found = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in found:
            raise DevToolsError(f"{expression[:80]}: {found['exceptionDetails']}")
        return found["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := self.evaluate(expression):
                    return value
            except DevToolsError:
                pass  # a page between two documents (a navigation) has no context for a moment
            time.sleep(0.1)
        try:  # what the page showed instead, for the failure's message
            seen = self.evaluate("`state=${document.body.dataset.state} | ${document.body.innerText}`")
        except DevToolsError as exc:
            seen = str(exc)
        raise DevToolsError(f"not true within {timeout} s: {expression}\nthe page: {str(seen)[:1500]}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
