"""The admin sub-app: performance API, dashboard and feedback form (filled by later work).

It reads through the tracker and store interfaces and never reaches into request handling.
"""

from __future__ import annotations

from admin_ui.app import create_admin_app

__all__ = ["create_admin_app"]
