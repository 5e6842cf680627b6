"""What the console's tests share: reading a page, its links and its next page; the
repository state a request must not change; screenshots (the headless Chromium, `browser`, is in conftest.py)."""

from __future__ import annotations

import os
import re
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from conftest import AppServer


def page(h: httpx.Client, path: str, status: int = 200, **kw: Any) -> str:
    r = h.get(path, **kw)
    assert r.status_code == status, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    return r.text


def links(html: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'href="([^"]*)"', html)]


def next_link(html: str) -> str | None:
    m = re.search(r'<a rel="next" href="([^"]*)"', html)
    return unescape(m.group(1)) if m else None


def state(srv: AppServer) -> Any:
    """Everything a request could change in the repository."""
    r = srv.repo
    return (
        r.branches(),
        sorted((b, x.path) for b, _ in r.branches() for x in r.meta.staged(b)),
        len(list(r.all_commits())),
    )


SHOTS = os.environ.get("PFS_CONSOLE_SCREENSHOTS")  # a directory: save the README's screenshots there


def shoot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def follow(driver: Any, element: Any, timeout: float = 10) -> None:
    """Click a link or a form's button and wait for the page it leads to: WebDriver's click
    can return before a navigation starts, and the next lookup would then read the old page."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    element.click()

    def gone(_: Any) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale; or, mid-navigation, Chrome's "does not belong to the document"
            return True
        return False

    WebDriverWait(driver, timeout).until(gone)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.readyState") == "complete")
