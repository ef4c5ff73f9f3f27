"""Gatewise: an OpenAI-compatible gateway that picks the upstream model from live data."""

__version__ = "0.1.0"
__all__ = ["__version__"]
