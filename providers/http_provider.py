"""What every HTTP-speaking provider shares: one pooled transport, failures of the
network (already classified by the transport) named after the provider, and a non-2xx
stream opening read and classified."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from providers.base import Call, Provider
from providers.errors import InvalidResponse, ProviderError, TransportError, classify_status
from providers.transport import TakeMemory, Transport, UpstreamResponse, UpstreamStream

__all__ = ["HttpProvider", "endpoint_url"]


def endpoint_url(base_url: str, path: str) -> str:
    """`path` appended to the base URL's path, its query kept after: Azure's
    `https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21` becomes
    `.../deployments/d/chat/completions?api-version=2024-10-21` (the path used to land
    after the query, where the upstream read it as part of the api-version)."""
    u = urlsplit(base_url)
    return urlunsplit((u.scheme, u.netloc, u.path.rstrip("/") + path, u.query, ""))


class HttpProvider(Provider):
    def __init__(self, name: str, transport: Transport, api_key: str | None) -> None:
        super().__init__(name)
        self._transport = transport
        self._secrets = (api_key,) if api_key else ()

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        memory: TakeMemory | None,
    ) -> UpstreamResponse:
        try:
            return await self._transport.request(method, url, headers, body, memory)
        except (TransportError, InvalidResponse) as exc:  # the transport's, incl. too large
            raise exc.prefixed(self.name) from None

    async def _open(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamStream:
        """Start a streamed POST; a non-2xx answer is read, closed and classified."""
        try:
            upstream = await self._transport.stream("POST", url, headers, body)
        except (TransportError, InvalidResponse) as exc:  # the transport's, incl. too large
            raise exc.prefixed(self.name) from None
        if upstream.status >= 400:
            try:
                content = await upstream.aread()
            except ProviderError:  # whatever broke the body, the status decides
                content = b""
            finally:
                await upstream.aclose()
            raise classify_status(
                upstream.status, content, upstream.headers, self.name, self._secrets
            )
        return upstream

    @staticmethod
    def _with(headers: dict[str, str], call: Call) -> Mapping[str, str]:
        """The provider's headers plus the call's trace context, if it has one."""
        return {**headers, **call.trace} if call.trace else headers

    async def aclose(self) -> None:
        await self._transport.aclose()
