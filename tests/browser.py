"""A real browser for the UI test: Debian's chromium, headless, driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from tests.pgcluster import free_port

# the visible element whose own text is exactly `label`, below the page header (the tab, not the nav)
FIND_LABEL = """(label => {
  for (const element of document.querySelectorAll('*')) {
    if (element.childElementCount || element.textContent.trim() !== label) continue;
    const box = element.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && box.top > 150) return [box.left + box.width / 2, box.top + box.height / 2];
  }
  return null;
})"""


def find_chromium(install: bool) -> str | None:
    """Debian's chromium; installed with apt when missing and we may (root, `install`)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or not install or os.geteuid() != 0:
        return found
    for steps in ([["apt-get", "install", "-y", "--no-install-recommends", "chromium"]],
                  [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]]):
        for step in steps:
            subprocess.run(step, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("chromium"):
            break
    return shutil.which("chromium")



class Page:
    def __init__(self, ws: Any) -> None:
        self.ws, self.calls = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        mine = self.calls
        await self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == mine:
                return message.get("result", {})

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def click_label(self, label: str, wait_s: float = 30) -> None:
        deadline = time.monotonic() + wait_s
        while (point := await self.js(f"{FIND_LABEL}({json.dumps(label)})")) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no visible {label!r} on the page")
            await asyncio.sleep(0.5)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=point[0], y=point[1], button="left", clickCount=1)

    async def wait_for_text(self, text: str, wait_s: float = 30) -> str:
        deadline = time.monotonic() + wait_s
        while True:
            body = await self.js("document.body ? document.body.innerText : ''") or ""
            if text in body or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.5)


async def _show_tab(chromium: str, url: str, tab: str, expect: str, screenshot: Path) -> str:
    port = free_port()
    browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                f"--remote-debugging-port={port}", "--window-size=1400,2400", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as response:
                    target = next(t for t in json.load(response) if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        assert target is not None, "chromium did not open its DevTools endpoint"
        async with websockets.connect(target["webSocketDebuggerUrl"], max_size=2**26) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Page.navigate", url=url)
            await page.click_label(tab)
            body = await page.wait_for_text(expect)
            shot = await page.call("Page.captureScreenshot", format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return body
    finally:
        browser.kill()
        browser.wait(timeout=30)


def show_tab(chromium: str, url: str, tab: str, expect: str, screenshot: Path) -> str:
    """Open `url`, click the `tab`, wait for `expect` to show, save a screenshot; the page's text."""
    return asyncio.run(_show_tab(chromium, url, tab, expect, screenshot))
