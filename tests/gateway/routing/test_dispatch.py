"""The dispatcher: fallback over ranked models, blame, the errors a request ends with,
and every attempt's outcome recorded once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.config import parse_config
from gateway.core.errors import (
    GatewayError,
    InvalidRequest,
    MemoryBusy,
    NoModelAvailable,
    Overloaded,
    RejectedByUpstream,
    UpstreamFailed,
)
from gateway.core.types import Attempt
from gateway.http.errors import status_of
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import Dispatcher, Exchange, Job, Outcome, ReplyJob
from providers import errors
from providers.base import Call, Endpoint, Provider, Reply, Usage, estimate_prompt
from providers.errors import ProviderError

T0 = 1_700_000_000.0
TT = "text-to-text"
HI = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    """Advances a fixed step at every read, so each attempt has a known, nonzero latency."""

    def __init__(self, now: float = 0.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Scripted(Provider):
    """Answers per upstream model from a script: a Reply, or a ProviderError to raise."""

    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self, name: str, script: dict[str, Reply | ProviderError]) -> None:
        super().__init__(name)
        self.script = script
        self.calls: list[str] = []

    async def send(self, call: Call) -> Reply:
        self.calls.append(call.upstream_model)
        outcome = self.script[call.upstream_model]
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome


def reply(text: str, prompt: int = 1000, completion: int = 500) -> Reply:
    body = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    return Reply(body, Usage(prompt, completion))


ERRORS: dict[str, type[ProviderError]] = {
    "server_error": errors.UpstreamServerError,
    "bad_request": errors.BadRequest,
    "context_length": errors.ContextLengthExceeded,
    "timeout": errors.UpstreamTimeout,
    "rate_limited": errors.RateLimited,
    "connection": errors.UpstreamConnectionError,
    "auth": errors.UpstreamAuthError,
    "not_found": errors.UpstreamNotFound,
}


def err(kind: str, status: int | None = None, **fields: Any) -> ProviderError:
    return ERRORS[kind](f"{kind} from upstream", status=status, **fields)


MODELS: list[dict[str, Any]] = [
    {"name": "a", "provider": "one", "context_window": 1000,
     "pricing": {"input_per_million": 2, "output_per_million": 4}},
    {"name": "b", "provider": "two", "context_window": 1000,
     "pricing": {"input_per_million": 3, "output_per_million": 6}},
    {"name": "c", "provider": "one", "context_window": 8000},
    {"name": "d", "provider": "two", "context_window": 32000},
]  # fmt: skip


class Ranked:
    """The selector's part: the target's candidates in their configured order."""

    def __init__(self) -> None:
        self.order: list[str] | None = None

    def rank(self, job: Job[Any, Any]) -> list[Any]:
        candidates = list(job.target.candidates)
        if self.order is None:
            return candidates
        by_name = {m.name: m for m in candidates}
        return [by_name[n] for n in self.order]


class Outcomes:
    """The recorder's part: every outcome, in order."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []
        self.gave_up: list[str] = []

    def record(self, outcome: Outcome) -> None:
        self.seen.append(outcome)

    def unanswered(self, job: Any, kind: str) -> None:
        self.gave_up.append(kind)

    @property
    def attempts(self) -> list[Attempt]:
        return [o.attempt() for o in self.seen]


class Setup:
    def __init__(self, script: dict[str, Reply | ProviderError], max_attempts: int = 3) -> None:
        config = parse_config(
            {
                "providers": [{"name": "one", "type": "mock"}, {"name": "two", "type": "mock"}],
                "models": MODELS,
                "routes": [{"name": "auto", "models": ["a", "b", "c", "d"]}],
            }
        )
        self.providers = {name: Scripted(name, script) for name in ("one", "two")}
        self.catalog = Catalog(config, self.providers)
        self.ranked = Ranked()
        self.outcomes = Outcomes()
        self.clock = Clock(step=0.01)
        self.dispatcher = Dispatcher(
            self.catalog,
            self.ranked,
            self.outcomes,
            max_attempts=max_attempts,
            clock=self.clock,
            wall=lambda: T0,
        )
        self.calls: list[str] = []
        for provider in self.providers.values():
            provider.calls = self.calls  # one shared log keeps the order across providers

    @property
    def attempts(self) -> list[Attempt]:
        return self.outcomes.attempts

    async def send(self, body: dict[str, Any] = HI) -> Exchange[Reply]:
        target = self.catalog.resolve("auto", TT)
        return await self.dispatcher.run(ReplyJob("req-1", Endpoint.CHAT, target, body))

    async def fail(self) -> GatewayError:
        with pytest.raises(GatewayError) as info:
            await self.send()
        return info.value


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Any real wait between attempts fails the test (a bare yield, sleep(0), is let
    through and recorded)."""
    calls: list[float] = []
    real_sleep = asyncio.sleep

    async def guarded_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        calls.append(delay)
        if delay > 0:
            raise AssertionError(f"the dispatcher slept {delay} s between attempts")
        return await real_sleep(0, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", guarded_sleep)
    return calls


async def test_a_failing_model_falls_back_to_the_next(no_sleeping: list[float]) -> None:
    s = Setup({"a": err("server_error", 500), "b": reply("from b")})
    exchange = await s.send()
    assert exchange.model.name == "b"
    assert exchange.provider == "two"
    assert exchange.number == 2
    assert exchange.result.body["choices"][0]["message"]["content"] == "from b"
    assert s.calls == ["a", "b"]
    [first] = s.attempts  # the failure is recorded at once; the answer when it closes
    assert (first.model, first.attempt, first.ok, first.counts_as_failure) == ("a", 1, False, True)
    assert (first.error_class, first.http_status) == ("server_error", 500)
    assert first.response_id is None
    assert first.latency_ms > 0
    outcome = exchange.close()
    _, second = s.attempts
    assert s.outcomes.seen[-1] is outcome
    assert (second.model, second.attempt, second.ok, second.counts_as_failure) == (
        "b",
        2,
        True,
        False,
    )
    assert second.cost == pytest.approx(1000 * 3 / 1e6 + 500 * 6 / 1e6)
    assert outcome.cost == exchange.model.pricing.cost_of(Usage(1000, 500))
    assert (second.prompt_tokens, second.completion_tokens) == (1000, 500)
    assert second.response_id is not None and second.response_id.startswith("chatcmpl-")
    assert second.request_id == first.request_id == "req-1"
    assert second.timestamp == T0
    assert outcome.answered and outcome.judged and outcome.body is exchange.result.body
    assert all(delay == 0 for delay in no_sleeping)


async def test_a_whole_reply_is_timed_to_its_arrival_not_to_its_close() -> None:
    s = Setup({"a": reply("from a")})
    exchange = await s.send()
    for _ in range(50):
        s.clock()  # time passes while the answer is written to the client
    outcome = exchange.close()
    assert outcome.timings.upstream_ms == pytest.approx(10.0)  # one 0.01 s clock step
    assert outcome.timings.ttft_ms == outcome.timings.upstream_ms


async def test_an_exchange_is_recorded_once() -> None:
    s = Setup({"a": reply("from a")})
    exchange = await s.send()
    exchange.close()
    with pytest.raises(RuntimeError):
        exchange.close()
    assert len(s.outcomes.seen) == 1


async def test_a_client_that_left_is_recorded_but_not_judged() -> None:
    s = Setup({"a": reply("from a")})
    outcome = (await s.send()).close(client_gone=True)
    assert outcome.client_gone and outcome.answered and not outcome.judged
    assert outcome.attempt().ok


async def test_first_success_records_one_attempt() -> None:
    s = Setup({"a": reply("from a")})
    exchange = await s.send()
    exchange.close()
    assert (exchange.model.name, exchange.number, s.calls) == ("a", 1, ["a"])
    [only] = s.attempts
    assert only.ok and only.cost == pytest.approx(1000 * 2 / 1e6 + 500 * 4 / 1e6)


async def test_max_attempts_limits_the_tries() -> None:
    s = Setup({m: err("server_error", 503) for m in "abcd"}, max_attempts=3)
    error = await s.fail()
    assert isinstance(error, UpstreamFailed)
    assert status_of(error) == (502, "server_error")
    assert error.code == "upstream_error"
    assert "All 3 attempt(s) failed" in error.message
    for name in ("a (one)", "b (two)", "c (one)"):
        assert name in error.message
    assert "d (two)" not in error.message
    assert s.calls == ["a", "b", "c"]  # the 4th candidate is never called
    assert [a.model for a in s.attempts] == ["a", "b", "c"]
    assert all(a.counts_as_failure and not a.ok for a in s.attempts)


async def test_a_client_error_is_returned_without_fallback() -> None:
    s = Setup({"a": err("bad_request", 400, param="temperature"), "b": reply("from b")})
    error = await s.fail()
    assert isinstance(error, RejectedByUpstream)
    assert status_of(error)[0] == 400
    assert error.code == "bad_request"
    assert error.param == "temperature"
    assert s.calls == ["a"]
    [only] = s.attempts
    assert not only.ok and not only.counts_as_failure
    assert only.error_class == "bad_request"


async def test_an_upstream_client_status_is_passed_on() -> None:
    s = Setup({"a": err("bad_request", 413), "b": reply("from b")})
    assert status_of(await s.fail())[0] == 413


async def test_context_length_moves_to_a_larger_context_model() -> None:
    s = Setup({"a": err("context_length", 400), "b": reply("from b"), "c": reply("from c")})
    exchange = await s.send()
    assert exchange.model.name == "c"  # b has the same 1000-token window as a: skipped
    assert exchange.number == 2
    assert s.calls == ["a", "c"]
    exchange.close()
    first, second = s.attempts
    assert first.error_class == "context_length"
    assert not first.ok and not first.counts_as_failure
    assert second.ok and second.model == "c"


async def test_context_length_everywhere_is_a_400() -> None:
    s = Setup({m: err("context_length", 400) for m in "abcd"}, max_attempts=4)
    error = await s.fail()
    assert status_of(error)[0] == 400
    assert error.code == "context_length_exceeded"
    assert s.calls == ["a", "c", "d"]
    assert not any(a.counts_as_failure for a in s.attempts)


async def test_all_timeouts_are_a_504() -> None:
    s = Setup({m: err("timeout") for m in "abcd"})
    error = await s.fail()
    assert status_of(error)[0] == 504
    assert error.code == "upstream_timeout"
    assert len(s.attempts) == 3


async def test_all_rate_limited_is_a_503_with_retry_after() -> None:
    script = {
        "a": err("rate_limited", 429, retry_after=7.0),
        "b": err("rate_limited", 429, retry_after=2.5),
        "c": err("rate_limited", 429),
        "d": reply("unused"),
    }
    s = Setup(script)
    error = await s.fail()
    assert isinstance(error, UpstreamFailed)
    assert status_of(error)[0] == 503
    assert error.code == "upstream_rate_limited"
    assert error.retry_after == 3  # rounded up: never invite an early retry
    assert [a.retry_after for a in s.attempts] == [7.0, 2.5, None]


async def test_mixed_failures_are_a_502() -> None:
    s = Setup({"a": err("timeout"), "b": err("rate_limited", 429), "c": err("connection")})
    error = await s.fail()
    assert status_of(error)[0] == 502


async def test_a_saturated_pool_moves_on_without_blaming_the_model() -> None:
    s = Setup({"a": errors.CapacityExhausted("all 1 in use"), "b": reply("from b")})
    exchange = await s.send()
    assert exchange.model.name == "b"
    exchange.close()
    assert [(a.model, a.ok) for a in s.attempts] == [("b", True)]  # nothing against a
    assert s.dispatcher.saturated == 1


async def test_saturation_everywhere_is_a_503_overloaded_with_retry_after() -> None:
    s = Setup({m: errors.CapacityExhausted("all in use") for m in "abcd"})
    error = await s.fail()
    assert isinstance(error, Overloaded)
    assert (status_of(error)[0], error.code) == (503, "gateway_overloaded")
    assert error.retry_after == 1
    assert s.attempts == []  # no model is blamed for the gateway's own saturation


async def test_saturation_beside_real_failures_reports_the_upstreams() -> None:
    s = Setup({"a": errors.CapacityExhausted("full"), "b": err("timeout"), "c": err("timeout")})
    error = await s.fail()
    assert isinstance(error, UpstreamFailed) and error.code == "upstream_timeout"
    assert [a.model for a in s.attempts] == ["b", "c"]


async def test_an_answer_with_no_room_is_a_503_to_retry_and_no_other_model_is_tried() -> None:
    """The worker could not hold the answer (server.max_body_memory): another model's
    answer would need the same room, so none is asked; the model is not blamed."""
    s = Setup({"a": errors.NoMemory("no room", status=503), "b": reply("from b")})
    error = await s.fail()
    assert isinstance(error, MemoryBusy)
    assert (status_of(error)[0], error.code, error.retry_after) == (503, "gateway_overloaded", 1)
    assert s.calls == ["a"]
    [attempt] = s.attempts  # the upstream answered: the attempt is on record, not held against a
    assert (attempt.model, attempt.ok, attempt.counts_as_failure) == ("a", False, False)
    assert attempt.error_class == "memory_busy"
    assert s.outcomes.gave_up == ["memory_busy"]
    # It was paid for upstream: the key pays its prompt, guessed (a's input is $2 / M).
    [outcome] = s.outcomes.seen
    assert outcome.usage_estimated and (attempt.prompt_tokens, attempt.completion_tokens) == (
        estimate_prompt(HI),
        0,
    )
    assert attempt.cost == pytest.approx(attempt.prompt_tokens * 2 / 1_000_000)


async def test_the_jobs_memory_reaches_the_call() -> None:
    taken: list[bytes] = []
    s = Setup({"a": reply("from a")})
    seen: list[Call] = []
    script = s.providers["one"].send

    async def send(call: Call) -> Reply:
        seen.append(call)
        return await script(call)

    s.providers["one"].send = send  # type: ignore[method-assign]
    target = s.catalog.resolve("auto", TT)
    job = ReplyJob("req-1", Endpoint.CHAT, target, HI, memory=taken.append)
    (await s.dispatcher.run(job)).close()
    [call] = seen
    assert call.memory is not None
    call.memory(b"{}")
    assert taken == [b"{}"]


async def test_nothing_left_to_try_is_a_503() -> None:
    s = Setup({"a": reply("unused")})
    s.ranked.order = []
    error = await s.fail()
    assert isinstance(error, NoModelAvailable)
    assert (status_of(error)[0], error.code) == (503, "no_model_available")
    assert s.calls == []


async def test_attempts_follow_the_ranked_order(no_sleeping: list[float]) -> None:
    s = Setup({"d": err("auth", 401), "c": err("not_found", 404), "a": reply("from a")})
    s.ranked.order = ["d", "c", "a", "b"]
    exchange = await s.send()
    exchange.close()
    assert exchange.model.name == "a"
    assert exchange.number == 3
    assert s.calls == ["d", "c", "a"]
    assert [a.attempt for a in s.attempts] == [1, 2, 3]
    assert all(delay == 0 for delay in no_sleeping)


async def test_the_client_body_is_passed_through_untouched() -> None:
    seen: list[Call] = []
    s = Setup({"a": reply("from a")})

    async def send(call: Call) -> Reply:
        seen.append(call)
        return reply("from a")

    s.providers["one"].send = send  # type: ignore[method-assign]
    body = {**HI, "temperature": 0.2}
    await s.send(body)
    assert seen[0].body is body
    assert seen[0].upstream_model == "a"
    assert seen[0].stream is False


async def test_models_whose_provider_cannot_serve_the_endpoint_are_skipped() -> None:
    """/v1/responses on a route that mixes Anthropic (no Responses API) and OpenAI."""

    class Chat(Provider):
        endpoints = frozenset({Endpoint.CHAT})

    class Both(Provider):
        endpoints = frozenset({Endpoint.CHAT, Endpoint.RESPONSES})

        async def send(self, call: Call) -> Reply:
            return Reply({"id": "r", "object": "response", "output": []})

    config = parse_config(
        {
            "providers": [{"name": "a", "type": "mock"}, {"name": "b", "type": "mock"}],
            "models": [{"name": "claude", "provider": "a"}, {"name": "gpt", "provider": "b"}],
            "routes": [{"name": "auto", "models": ["claude", "gpt"]}],
        }
    )
    catalog = Catalog(config, {"a": Chat("a"), "b": Both("b")})
    outcomes = Outcomes()
    dispatcher = Dispatcher(catalog, Ranked(), outcomes)
    body = {"model": "auto", "input": "hi"}
    target = catalog.resolve("auto", "text-to-text")
    exchange = await dispatcher.run(ReplyJob("req", Endpoint.RESPONSES, target, body))
    exchange.close()
    assert exchange.model.name == "gpt" and [a.model for a in outcomes.attempts] == ["gpt"]

    only_claude = Catalog(config, {"a": Chat("a"), "b": Chat("b")})
    dispatcher = Dispatcher(only_claude, Ranked(), outcomes)
    job = ReplyJob("req", Endpoint.RESPONSES, only_claude.resolve("claude", TT), body)
    with pytest.raises(InvalidRequest) as caught:
        await dispatcher.run(job)
    assert status_of(caught.value)[0] == 400
    assert "cannot serve responses" in caught.value.message


class Hanging(Provider):
    """Never answers until cancelled; says whether it was."""

    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.started = asyncio.Event()
        self.cancelled = False

    async def send(self, call: Call) -> Reply:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def test_a_cancelled_attempt_is_the_clients_leaving_and_blames_no_model() -> None:
    setup = Setup({})
    hanging = Hanging("one")
    setup.catalog.providers["one"] = hanging  # type: ignore[index]
    task = asyncio.ensure_future(setup.send())
    await hanging.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hanging.cancelled
    [attempt] = setup.attempts  # recorded once, and no other model was tried
    assert attempt.model == "a" and not attempt.ok
    assert attempt.error_class == "client_gone" and not attempt.counts_as_failure
    assert not setup.outcomes.seen[0].judged


class Stored:
    """A recorder whose failures bench at once, with a write of the bench to wait for."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []
        self.writes: list[asyncio.Future[None]] = []

    def record(self, outcome: Outcome) -> asyncio.Future[None] | None:
        self.seen.append(outcome)
        if outcome.error is None:
            return None
        write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writes.append(write)
        return write

    def unanswered(self, job: Any, kind: str) -> None:
        pass


async def test_the_next_model_is_tried_once_the_bench_a_failure_caused_is_stored() -> None:
    setup = Setup({"a": err("server_error", 500), "b": reply("from b")})
    stored = Stored()
    setup.dispatcher._recorder = stored
    task = asyncio.ensure_future(setup.send())
    while not stored.writes:
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert setup.calls == ["a"]  # b waits for the bench of a to be stored
    stored.writes[0].set_result(None)
    exchange = await task
    assert exchange.model.name == "b" and setup.calls == ["a", "b"]


async def test_a_failure_midway_is_told_once_the_bench_it_began_is_stored() -> None:
    setup = Setup({"a": reply("from a")})
    exchange = await setup.send()
    stored = Stored()
    setup.dispatcher._recorder = stored
    failing = asyncio.ensure_future(exchange.fail(err("server_error", 500)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert stored.writes and not failing.done()  # the client is not told yet
    stored.writes[0].set_result(None)
    outcome = await failing
    assert outcome.error is not None and outcome.answered
    with pytest.raises(RuntimeError):
        exchange.close()  # once, whichever way
