"""What the admin UI may read: the routing layer's public objects and the store."""

from __future__ import annotations

from typing import Protocol

from gateway.core.keys import KeyRing
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.comparisons import Comparisons
from gateway.routing.evaluation import Evaluator
from gateway.routing.experiments import Experiments
from gateway.routing.feedback import FeedbackService, ResponseIndex
from gateway.routing.key_registry import KeyRegistry
from gateway.routing.pairwise import PairwiseService
from gateway.routing.quota import Quota
from gateway.routing.recorder import Recorder
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from gateway.storage import Store

__all__ = ["AdminServices", "Exposition"]


class Exposition(Protocol):
    """The Prometheus text of this replica's metrics (`gateway.server.metrics.Metrics`)."""

    def exposition(self) -> bytes: ...


class AdminServices(Protocol):
    tracker: Tracker
    blacklist: Blacklist
    selector: Selector
    catalog: Catalog
    recorder: Recorder
    store: Store
    index: ResponseIndex
    evaluator: Evaluator
    feedback: FeedbackService
    keys: KeyRing
    key_registry: KeyRegistry
    quota: Quota
    experiments: Experiments
    comparisons: Comparisons
    pairwise: PairwiseService

    @property
    def metrics(self) -> Exposition: ...
