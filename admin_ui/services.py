"""What the admin UI may read: the tracker, blacklist, selector, catalog and store."""

from __future__ import annotations

from typing import Protocol

from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.feedback import FeedbackService
from gateway.routing.responses import ResponseIndex
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from gateway.storage import Store

__all__ = ["AdminServices"]


class AdminServices(Protocol):
    tracker: Tracker
    blacklist: Blacklist
    selector: Selector
    catalog: Catalog
    store: Store | None
    index: ResponseIndex
    feedback: FeedbackService | None
