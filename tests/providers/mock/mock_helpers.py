"""Shared by the MockProvider tests (test_mock*.py): a fake clock and sleep, a provider
factory and small call/collect helpers."""

from __future__ import annotations

from typing import Any

from providers.base import Call, Chunk, Endpoint
from providers.errors import ProviderError
from providers.mock.config import MockConfig
from providers.mock.provider import MockProvider

CHAT_BODY = {"model": "client-name", "messages": [{"role": "user", "content": "Say hi"}]}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(
    default: MockConfig | None = None,
    models: dict[str, MockConfig] | None = None,
    sleeps: Sleeps | None = None,
    clock: FakeClock | None = None,
) -> MockProvider:
    return MockProvider(
        "mocky",
        models or {},
        default or MockConfig(quality=1.0),
        sleep=sleeps if sleeps is not None else Sleeps(),
        clock=clock or FakeClock(),
    )


def chat(body: dict[str, Any] | None = None, model: str = "up-model") -> Call:
    return Call(Endpoint.CHAT, body or CHAT_BODY, model)


async def outcomes(provider: MockProvider, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        try:
            reply = await provider.send(chat())
        except ProviderError as exc:
            seen.append(exc.kind)
        else:
            seen.append(reply.body["choices"][0]["finish_reason"])
    return seen


async def collect(stream: Any) -> list[Chunk]:
    return [event async for event in stream]
