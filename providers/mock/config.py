"""How a mock upstream behaves, validated once when the configuration is read.

The gateway's configuration embeds it (a provider's `mock:` and each model's); the mock
provider reads plain attributes from it on every call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MockConfig"]


class MockConfig(BaseModel):
    """How a `mock` upstream behaves; set on the provider and refined per model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(0.0, ge=0)
    latency_jitter_ms: float = Field(0.0, ge=0)
    ttft_ms: float | None = Field(None, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    failure_kinds: list[Literal["5xx", "429", "timeout", "malformed"]] = ["5xx"]
    quality: float = Field(0.8, ge=0, le=1)
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int = Field(16, ge=1)
    seed: int = 0
