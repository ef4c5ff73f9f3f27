"""A loopback OpenAI-compatible upstream that answers with recorded answers.

For the replay benchmark: whichever model the gateway asks for a recorded prompt gets
that model's recorded answer, with token counts in `usage` (about 4 characters a
token), so the gateway's cost accounting sees what the real models would have cost.
Every request is matched to its prompt by the messages' text.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aiohttp import web

from bench.quality_upstream import ChatServer
from bench.replay_data import MODELS, Prompt

__all__ = ["RecordedUpstream", "key_of"]


def key_of(contents: Sequence[str]) -> str:
    return "\x1e".join(contents)


class RecordedUpstream(ChatServer):
    max_body = 4 * 1024 * 1024

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.prompts = {key_of([c for _, c in p.messages]): p for p in prompts}
        self.calls = 0

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            model = body["model"]
            key = key_of([m["content"] for m in body["messages"]])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "expected a chat completion request")
        prompt = self.prompts.get(key)
        if model not in MODELS or prompt is None:
            return _error(404, f"no recorded answer of {model!r} to this prompt")
        self.calls += 1
        prompt_tokens, completion_tokens = prompt.tokens(model)
        out = {
            "id": f"chatcmpl-replay{self.calls}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": prompt.answers[model]},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
