"""The mock upstream: every endpoint from memory, misbehaving on cue (see provider.py)."""

from providers.mock.config import MockConfig
from providers.mock.provider import MockProvider

__all__ = ["MockConfig", "MockProvider"]
