"""A screenshot of a report written by `hfx report` (docs/images/report.png in the README):

    python scripts/report_screenshot.py <dir>/report/report.html [docs/images/report.png] [--full]

Headless Chromium through playwright, with a fresh profile, offline (the page is self-contained). The browser is
/usr/bin/chromium unless CHROMIUM names another."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main(argv: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    full = "--full" in argv
    paths = [a for a in argv if a != "--full"]
    if not paths or not Path(paths[0]).is_file():
        sys.exit(f"usage: {sys.argv[0]} <report.html> [<png>] [--full]")
    page_path = Path(paths[0]).resolve()
    target = Path(paths[1] if len(paths) > 1 else "docs/images/report.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), headless=True, args=ARGS,
            viewport={"width": 1280, "height": 1600}, device_scale_factor=1)
        page = browser.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        page.screenshot(path=str(target), full_page=full)
        browser.close()
    print(target)


if __name__ == "__main__":
    main(sys.argv[1:])
