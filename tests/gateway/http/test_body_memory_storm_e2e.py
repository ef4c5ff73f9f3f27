"""The worker's memory for bodies, after a storm: every share given back.

Requests of every kind at once against a small `server.max_body_memory`: streams with a
large event (whole, broken midway by the upstream, left by their client after the first
chunk), whole answers, Anthropic streams; some refused, some dropped. However
each one ends, once all have, the worker holds nothing: a share that leaked would leave
the worker refusing everything, one request at a time, for good."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import orjson

from tests.gateway.http.test_body_memory_e2e import HELD, HI, claude, config, metrics, sdk
from tests.gateway.http.test_client_gone_e2e import within
from tests.gateway.server.test_metrics_e2e import total
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

FRAME = "x" * 200_000  # one event of 200 KB: ~400 KB held while it is read


def test_after_a_storm_of_every_ending_the_worker_holds_nothing(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    upstream.behave("alpha-up", content=f"hi {FRAME} bye")
    # Breaks after the large event (then is benched: its later requests get 503).
    upstream.behave("beta-up", content=f"hi {FRAME} bye", fail_after_chunks=2)
    upstream.behave("gamma-up", content=f"hi {FRAME} bye", delay=0.01)
    cfg = config(upstream)
    cfg["server"]["max_body_memory"] = 1_000_000  # a few large events at once
    gw = start_gateway(cfg)

    def one(seed: int) -> str:
        rng = random.Random(seed)
        kind = rng.choice(["whole", "stream", "broken", "left", "messages"])
        model = "beta" if kind == "broken" else rng.choice(["alpha", "gamma"])
        try:
            if kind == "messages":
                with (
                    claude(gw) as client,
                    client.messages.stream(model=model, max_tokens=16, messages=HI) as s,
                ):
                    text = "".join(s.text_stream)
                assert FRAME in text
                return kind
            with sdk(gw) as client:
                if kind == "whole":
                    answer = client.chat.completions.create(model=model, messages=HI)
                    assert FRAME in (answer.choices[0].message.content or "")
                    return kind
                stream = client.chat.completions.create(model=model, messages=HI, stream=True)
                with stream:
                    text = ""
                    for chunk in stream:
                        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                        if kind == "left":
                            return kind  # leaves after the first chunk
                    assert FRAME in text
                    return kind
        except openai.APIError as exc:
            status = getattr(exc, "status_code", None)
            assert status in (None, 503), exc  # midway (an error event), or no room
            return f"{kind}: {status or 'midway'}"
        except anthropic.APIStatusError as exc:
            # No room (503), or no room midway: an error event in a stream begun with 200.
            assert exc.status_code in (200, 503), exc
            assert exc.body["error"]["type"] == "overloaded_error", exc  # type: ignore[index]
            return f"{kind}: {exc.status_code}"

    with ThreadPoolExecutor(16) as pool:
        ended = Counter(pool.map(one, range(96)))
    print(ended)
    assert sum(ended.values()) == 96
    assert any(":" in k for k in ended) and any(":" not in k for k in ended), ended
    within(10, lambda: total(metrics(gw), HELD) == 0)
    with sdk(gw) as client:  # and a large answer fits again
        answer = client.chat.completions.create(model="alpha", messages=HI)
        assert FRAME in (answer.choices[0].message.content or "")
    lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line.get("level") == "error"]
    assert "Traceback" not in gw.logs()
