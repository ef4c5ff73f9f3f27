"""How the tests (and the README screenshot) start Debian's Chromium: never a download,
and without the background networking that this machine's closed network refuses."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("GATEWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
