"""CPU per forwarded stream event, in process: the provider's reading of an upstream read
(one OpenAI content chunk), the evaluator's keeping of its text and the encoding the
client reads, with no network and no server. The end-to-end number (bench/streams.py)
adds the sockets, the event loop and the ASGI path.

Usage: PYTHONPATH=TREE python3 bench/event_cost.py [EVENTS]
Runs against the tree on PYTHONPATH, so the same script measures an older commit:
  git worktree add /tmp/before main && PYTHONPATH=/tmp/before python3 bench/event_cost.py
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.http import proxy
from gateway.routing.answers import StreamAnswer
from gateway.routing.dispatch import Streaming
from providers.base import Call, Endpoint
from providers.openai import OpenAIProvider
from providers.transport import Transport, UpstreamResponse, UpstreamStream

HEAD = (
    b'data: {"id":"chatcmpl-bench0002","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
)
ROLE = HEAD + b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
CONTENT = HEAD + b'{"content":"token %d "},"logprobs":null,"finish_reason":null}]}\n\n'
FINISH = HEAD + b'{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
USAGE = (
    b'data: {"id":"chatcmpl-bench0002","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":20,'
    b'"total_tokens":44}}\n\ndata: [DONE]\n\n'
)


class _Upstream(UpstreamStream):
    def __init__(self, reads: list[bytes]) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self._reads = reads

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read

    async def aread(self) -> bytes:
        return b""

    async def aclose(self) -> None:
        pass


class _Transport(Transport):
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def request(self, *args: Any, **kwargs: Any) -> UpstreamResponse:
        raise AssertionError

    async def stream(self, *args: Any, **kwargs: Any) -> UpstreamStream:
        return _Upstream(self.reads)


class _Observer:
    """What `Streaming.observe` needs of an exchange."""

    def __init__(self) -> None:
        self.said = StreamAnswer()


async def one_stream(provider: OpenAIProvider, body: dict[str, Any]) -> int:
    stream = await provider.stream(Call(Endpoint.CHAT, body, "bench", True))
    pieces = getattr(stream, "pieces", None)
    batches = pieces("chatcmpl-gw", "bench-large") if pieces else stream.batches()
    watcher = _Observer()
    written = 0
    async for batch in batches:
        Streaming.observe(watcher, batch)  # type: ignore[arg-type]
        written += len(proxy._encode_batch(batch, "chatcmpl-gw", "bench-large"))
    watcher.said.result()
    return written


async def main(events: int) -> None:
    per_stream = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    reads = [ROLE, *(CONTENT % i for i in range(per_stream)), FINISH, USAGE]
    provider = OpenAIProvider("bench", "http://127.0.0.1:1/v1", _Transport(reads))
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    streams = max(1, events // len(reads))
    for _ in range(50):
        await one_stream(provider, body)
    gc.collect()
    started = time.process_time()
    for _ in range(streams):
        await one_stream(provider, body)
    spent = time.process_time() - started
    total = streams * len(reads)
    print(f"{total} events in {streams} streams: {spent / total * 1e6:.2f} us CPU per event")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
