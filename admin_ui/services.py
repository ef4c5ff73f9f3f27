"""What the admin UI may read: the tracker, blacklist, selector, catalog and store."""

from __future__ import annotations

from typing import Protocol

from gateway.blacklist import Blacklist
from gateway.catalog import Catalog
from gateway.feedback import FeedbackService
from gateway.responses import ResponseIndex
from gateway.selection import Selector
from gateway.store import Store
from gateway.tracker import Tracker

__all__ = ["AdminServices"]


class AdminServices(Protocol):
    tracker: Tracker
    blacklist: Blacklist
    selector: Selector
    catalog: Catalog
    store: Store | None
    index: ResponseIndex
    feedback: FeedbackService | None
