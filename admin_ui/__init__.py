"""The admin sub-app: performance API, dashboard and feedback form.

It reads through the tracker and store interfaces and never reaches into request handling.
"""

from __future__ import annotations

from admin_ui.app import create_admin_app
from admin_ui.auth import DIRECT_ONLY

__all__ = ["DIRECT_ONLY", "create_admin_app"]
