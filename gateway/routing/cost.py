"""What an answer cost, from the YAML pricing and the usage the upstream reported."""

from __future__ import annotations

from gateway.core.config import Pricing
from providers.base import Usage

__all__ = ["cost_of"]


def cost_of(pricing: Pricing, usage: Usage | None) -> float:
    if usage is None:
        return 0.0
    return (
        usage.prompt_tokens * pricing.input_per_million / 1_000_000
        + usage.completion_tokens * pricing.output_per_million / 1_000_000
        + usage.images * pricing.per_image
        + usage.seconds * pricing.per_second
    )
