"""The mock upstream's behaviour: deterministic misbehaviour, latency and token accounting.

Response shapes: test_mock_chat.py (chat) and test_mock_endpoints.py (every other endpoint).
"""

from __future__ import annotations

import math

import pytest
from openai.types.chat import ChatCompletion

from providers.base import Call, Endpoint
from providers.errors import ProviderError
from providers.mock.config import MockConfig
from tests.providers.mock.mock_helpers import CHAT_BODY, Sleeps, chat, collect, make, outcomes

# ------------------------------------------------------------------ determinism and failures


async def test_same_seed_gives_same_sequence_and_other_seed_differs() -> None:
    def config(seed: int) -> MockConfig:
        return MockConfig(
            failure_rate=0.5, failure_kinds=["5xx", "429", "timeout"], quality=0.2, seed=seed
        )

    first = await outcomes(make(config(7)), 60)
    second = await outcomes(make(config(7)), 60)
    other = await outcomes(make(config(8)), 60)
    assert first == second
    assert first != other
    assert {"server_error", "rate_limited", "timeout", "stop"} <= set(first)


async def test_each_model_has_its_own_sequence() -> None:
    flaky = MockConfig(failure_rate=0.5, seed=3)
    provider = make(models={"a": flaky, "b": flaky})
    a_then_b = []
    for _ in range(20):
        for name in ("a", "b"):
            try:
                await provider.send(chat(model=name))
                a_then_b.append((name, True))
            except ProviderError:
                a_then_b.append((name, False))
    a = [ok for name, ok in a_then_b if name == "a"]
    b = [ok for name, ok in a_then_b if name == "b"]
    assert a == b  # interleaving calls does not disturb either model's sequence


async def test_failure_rate_zero_never_fails() -> None:
    provider = make(MockConfig(failure_rate=0.0, quality=1.0))
    assert set(await outcomes(provider, 100)) == {"stop"}


@pytest.mark.parametrize(
    ("kind", "expected", "status"),
    [
        ("5xx", "server_error", 500),
        ("429", "rate_limited", 429),
        ("timeout", "timeout", None),
        ("malformed", "invalid_body", None),
    ],
)
async def test_failure_rate_one_raises_the_mapped_kind(
    kind: str, expected: str, status: int | None
) -> None:
    provider = make(MockConfig(failure_rate=1.0, failure_kinds=[kind]))
    for _ in range(5):
        with pytest.raises(ProviderError) as caught:
            await provider.send(chat())
        assert caught.value.kind == expected
        assert caught.value.status == status
        assert caught.value.blames_model
    if kind == "5xx":
        assert caught.value.message == "mocky: simulated upstream error (HTTP 500)"
    if kind == "429":
        assert caught.value.retry_after == 1.0


async def test_every_endpoint_can_fail_and_streams_fail_before_returning() -> None:
    provider = make(MockConfig(failure_rate=1.0))
    body = {"input": "x", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    for endpoint in (Endpoint.EMBEDDINGS, Endpoint.IMAGES, Endpoint.VIDEOS, Endpoint.RESPONSES):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await provider.send(Call(endpoint, body, "m"))
    for endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await provider.stream(Call(endpoint, body, "m", stream=True))
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider.binary(Call(Endpoint.SPEECH, body, "m"))


async def test_unknown_models_use_the_default_and_known_ones_their_own() -> None:
    provider = make(
        MockConfig(failure_rate=1.0), models={"good": MockConfig(failure_rate=0.0, quality=1.0)}
    )
    reply = await provider.send(chat(model="good"))
    assert reply.body["model"] == "good"
    with pytest.raises(ProviderError):
        await provider.send(chat(model="anything-else"))


async def test_unsupported_combinations() -> None:
    provider = make()
    with pytest.raises(ProviderError) as caught:
        await provider.stream(Call(Endpoint.EMBEDDINGS, {"input": "x"}, "m", stream=True))
    assert caught.value.kind == "unsupported"
    with pytest.raises(ProviderError):
        await provider.binary(chat())
    with pytest.raises(ProviderError):
        await provider.send(Call(Endpoint.SPEECH, {"input": "x"}, "m"))
    assert all(provider.supports(endpoint) for endpoint in Endpoint)


# ------------------------------------------------------------------ latency


async def test_latency_goes_to_the_injected_sleep() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=250), sleeps=sleeps)
    await provider.send(chat())
    assert sleeps == [0.25]


async def test_jitter_stays_within_bounds_and_never_goes_negative() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=100, latency_jitter_ms=50), sleeps=sleeps)
    for _ in range(50):
        await provider.send(chat())
    assert len(sleeps) == 50
    assert all(0.05 <= s <= 0.15 for s in sleeps)
    assert len(set(sleeps)) > 1
    sleeps.clear()
    provider = make(MockConfig(latency_ms=0, latency_jitter_ms=50), sleeps=sleeps)
    for _ in range(50):
        await provider.send(chat())
    assert all(s > 0 for s in sleeps)


async def test_zero_latency_never_calls_sleep() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=0), sleeps=sleeps)
    await provider.send(chat())
    await collect(await provider.stream(chat({**CHAT_BODY, "stream": True})))
    audio = await provider.binary(Call(Endpoint.SPEECH, {"input": "hi"}, "tts"))
    async for _ in audio:
        pass
    assert sleeps == []


async def test_stream_waits_ttft_then_spreads_the_rest_over_content() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=1000, ttft_ms=200, quality=1.0), sleeps=sleeps)
    stream = await provider.stream(chat({**CHAT_BODY, "stream": True}))
    assert sleeps == [0.2]  # the first byte arrives before the stream is handed over
    events = await collect(stream)
    pieces = [e for _, e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(sleeps) == 1 + len(pieces)
    assert math.isclose(sum(sleeps), 1.0)


async def test_stream_ttft_defaults_to_the_whole_latency() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=300), sleeps=sleeps)
    await collect(await provider.stream(chat({**CHAT_BODY, "stream": True})))
    assert sleeps == [0.3]


# ------------------------------------------------------------------ tokens


async def test_prompt_tokens_are_estimated_from_the_text() -> None:
    provider = make()
    body = {
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 41}]},
        ]
    }
    reply = await provider.send(chat(body))
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == -(-81 // 4)  # four characters a token, rounded up


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_the_answer(key: str) -> None:
    provider = make(MockConfig(completion_tokens=16, quality=1.0))
    reply = await provider.send(chat({**CHAT_BODY, key: 5}))
    parsed = ChatCompletion.model_validate(reply.body)
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5
    assert len(parsed.choices[0].message.content.split()) == 5
    roomy = await provider.send(chat({**CHAT_BODY, key: 500}))
    assert roomy.body["choices"][0]["finish_reason"] == "stop"


async def test_low_quality_truncates_some_answers() -> None:
    provider = make(MockConfig(quality=0.0, seed=1))
    reasons = [
        (await provider.send(chat())).body["choices"][0]["finish_reason"] for _ in range(200)
    ]
    share = reasons.count("length") / len(reasons)
    assert 0.2 < share < 0.4  # (1 - quality) * 0.3
    perfect = make(MockConfig(quality=1.0))
    assert set(await outcomes(perfect, 50)) == {"stop"}
