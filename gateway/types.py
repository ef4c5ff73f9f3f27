"""The vocabulary shared by every module of the gateway."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = [
    "CONVERSATION_TYPES",
    "ENDPOINT_TYPES",
    "OPTIMIZATIONS",
    "ConversationType",
    "Endpoint",
    "Optimization",
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


class Endpoint(StrEnum):
    """An OpenAI API operation the gateway serves; providers decide which they support."""

    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    IMAGES = "images.generations"
    SPEECH = "audio.speech"
    VIDEOS = "videos"
    VIDEO_STATUS = "videos.retrieve"
    RESPONSES = "responses"


ENDPOINT_TYPES: dict[Endpoint, ConversationType] = {
    Endpoint.CHAT: "text-to-text",
    Endpoint.COMPLETIONS: "text-to-text",
    Endpoint.RESPONSES: "text-to-text",
    Endpoint.EMBEDDINGS: "embedding",
    Endpoint.IMAGES: "text-to-image",
    Endpoint.SPEECH: "text-to-audio",
    Endpoint.VIDEOS: "text-to-video",
    Endpoint.VIDEO_STATUS: "text-to-video",
}
