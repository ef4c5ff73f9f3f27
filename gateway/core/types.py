"""The vocabulary shared by every module of the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from providers.base import Endpoint

__all__ = [
    "CONVERSATION_TYPES",
    "ENDPOINT_TYPES",
    "OPTIMIZATIONS",
    "Attempt",
    "ConversationType",
    "Optimization",
    "ResponseRecord",
]

ConversationType = Literal[
    "text-to-text", "text-to-image", "text-to-audio", "text-to-video", "embedding"
]
Optimization = Literal["cost", "accuracy", "creativity", "speed", "continuity"]

CONVERSATION_TYPES: tuple[ConversationType, ...] = (
    "text-to-text",
    "text-to-image",
    "text-to-audio",
    "text-to-video",
    "embedding",
)
OPTIMIZATIONS: tuple[Optimization, ...] = ("cost", "accuracy", "creativity", "speed", "continuity")


ENDPOINT_TYPES: dict[Endpoint, ConversationType] = {
    Endpoint.CHAT: "text-to-text",
    Endpoint.COMPLETIONS: "text-to-text",
    Endpoint.RESPONSES: "text-to-text",
    Endpoint.EMBEDDINGS: "embedding",
    Endpoint.IMAGES: "text-to-image",
    Endpoint.SPEECH: "text-to-audio",
    Endpoint.VIDEOS: "text-to-video",
    Endpoint.VIDEO_STATUS: "text-to-video",
    Endpoint.MESSAGES: "text-to-text",
    Endpoint.COUNT_TOKENS: "text-to-text",
}


@dataclass(slots=True)
class Attempt:
    """One try of one model for one request, as the tracker counts it and the store
    keeps it."""

    request_id: str
    response_id: str | None
    attempt: int
    model: str
    provider: str
    conversation_type: ConversationType
    route: str | None
    optimization: str | None
    ok: bool
    error_class: str | None = None
    http_status: int | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    timestamp: float = 0.0
    stream: bool = False
    error_message: str | None = None
    retry_after: float | None = None
    counts_as_failure: bool = field(default=False)
    conversation_id: str | None = None


@dataclass(slots=True)
class ResponseRecord:
    """What the gateway remembers of an answer it returned, by its response id: what a
    rating is attached to, and what the evaluation found."""

    response_id: str
    request_id: str
    model: str
    provider: str
    conversation_type: str
    route: str | None
    optimization: str | None
    ts: float
    latency_ms: float
    flags: list[str] = field(default_factory=list)
    auto_score: float | None = None
    prompt: str | None = None
    answer: str | None = None
    owner: str | None = None  # the client key's name that received it (None: open gateway)
    stored: bool = False
    experiment: str | None = None  # the experiment and arm that served it (issue 21)
    arm: str | None = None
    cost: float | None = None  # USD, as priced when it was answered

    def to_row(self) -> dict[str, Any]:
        """The store's columns (everything but `stored`); written for every answer."""
        return {
            "response_id": self.response_id, "request_id": self.request_id,
            "model": self.model, "provider": self.provider,
            "conversation_type": self.conversation_type, "route": self.route,
            "optimization": self.optimization, "ts": self.ts, "latency_ms": self.latency_ms,
            "flags": self.flags, "auto_score": self.auto_score, "prompt": self.prompt,
            "answer": self.answer, "owner": self.owner, "experiment": self.experiment,
            "arm": self.arm, "cost": self.cost,
        }  # fmt: skip
