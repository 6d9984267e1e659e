"""Pages in a real browser: Debian's chromium, driven by Playwright (which cannot
download a browser of its own here). scripts/test installs chromium when it is missing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Page, async_playwright

CHROMIUM = Path(os.environ.get("RIG_CHROMIUM", "/usr/bin/chromium"))
# Without these, chromium looks up Google's hosts and floods the closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """A fresh page of a headless chromium, closed after."""
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"no chromium at {CHROMIUM}: scripts/test installs Debian's (apt-get install "
            "chromium); or set RIG_CHROMIUM to a chromium binary"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS, timeout=60_000
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            await browser.close()
