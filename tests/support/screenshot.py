"""Takes the README's dashboard screenshot with the same browser tooling as the tests.

gatewise demo --port 8096 --duration 60 &
sleep 30
python -m tests.support.screenshot http://127.0.0.1:8096 admin_ui/static/dashboard.png
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS


def main(base: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(f"{base}/model-performance")
        page.wait_for_selector("table tbody tr")
        page.wait_for_timeout(3000)  # let one poll fill the charts and rankings
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
