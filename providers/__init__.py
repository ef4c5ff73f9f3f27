"""Upstream LLM APIs behind one OpenAI-shaped interface: a library the gateway uses.

A `Provider` takes a `Call` and returns a `Reply`, a `ChunkStream` or a `BinaryReply`,
or raises a `ProviderError`: an `UpstreamError` blames the model, a `RequestRejected`
blames the request. HTTP providers talk through a `Transport`. `create_provider` builds
one from plain options. Nothing in this package imports the gateway.
"""

from providers.anthropic import AnthropicProvider
from providers.base import (
    BinaryReply,
    Call,
    Chunk,
    ChunkStream,
    Endpoint,
    Provider,
    Reply,
    Usage,
)
from providers.errors import (
    STOPPING,
    BadRequest,
    CapacityExhausted,
    ClientGone,
    ContextLengthExceeded,
    GatewayStopped,
    InvalidResponse,
    ProviderError,
    RateLimited,
    RequestRejected,
    ResponseTooLarge,
    TransportError,
    UnsupportedRequest,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamServerError,
    UpstreamStatusError,
    UpstreamTimeout,
    classify_status,
    redact,
    stopped,
    upstream_json,
)
from providers.factory import (
    TRANSPORTS,
    ProviderKind,
    TransportKind,
    create_provider,
    create_transport,
)
from providers.http1.pool import NativeTransport
from providers.mock.config import MockConfig
from providers.mock.provider import MockProvider
from providers.openai import OpenAIProvider
from providers.tls import TlsOptions
from providers.transport import MAX_BODY, Timeout, Transport, UpstreamResponse, UpstreamStream

__all__ = [
    "MAX_BODY",
    "STOPPING",
    "TRANSPORTS",
    "AnthropicProvider",
    "BadRequest",
    "BinaryReply",
    "Call",
    "CapacityExhausted",
    "Chunk",
    "ChunkStream",
    "ClientGone",
    "ContextLengthExceeded",
    "Endpoint",
    "GatewayStopped",
    "InvalidResponse",
    "MockConfig",
    "MockProvider",
    "NativeTransport",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "ProviderKind",
    "RateLimited",
    "Reply",
    "RequestRejected",
    "ResponseTooLarge",
    "Timeout",
    "TlsOptions",
    "Transport",
    "TransportError",
    "TransportKind",
    "UnsupportedRequest",
    "UpstreamAuthError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamResponse",
    "UpstreamServerError",
    "UpstreamStatusError",
    "UpstreamStream",
    "UpstreamTimeout",
    "Usage",
    "classify_status",
    "create_provider",
    "create_transport",
    "redact",
    "stopped",
    "upstream_json",
]
