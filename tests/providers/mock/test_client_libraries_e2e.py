"""Client libraries against a real gateway process serving the mock: what they parse and
validate (structured output, tool calls, `n`, log probabilities) works as with a real model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.support.gateway import GatewayProcess

KEY = "test-key"


class Pet(BaseModel):
    species: str
    legs: int = Field(ge=0, le=8)


class Person(BaseModel):
    """A person, as a client library would ask for one."""

    name: str = Field(min_length=2)
    age: int = Field(ge=18)
    mood: Literal["happy", "sad"]
    tags: list[str]
    pet: Pet | None


@pytest.fixture
def gw(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    config = {
        "server": {"api_keys": [KEY]},
        "providers": [{"name": "sim", "type": "mock", "mock": {"latency_ms": 0}}],
        "models": [{"name": "sim", "provider": "sim"}],
        "routes": [],
    }
    return start_gateway(config)


@pytest.fixture
def llm(gw: GatewayProcess) -> ChatOpenAI:
    return ChatOpenAI(model="sim", base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_langchain_structured_output_validates(llm: ChatOpenAI, method: str) -> None:
    structured = llm.with_structured_output(Person, method=method)  # type: ignore[arg-type]
    person = structured.invoke("Describe someone")
    assert isinstance(person, Person)
    assert person.age >= 18 and len(person.name) >= 2


def test_langchain_tool_loop_calls_the_tool_then_answers(llm: ChatOpenAI) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    bound = llm.bind_tools([get_weather])
    asked = HumanMessage("What is the weather in Paris? Use get_weather.")
    first = bound.invoke([asked])
    [call] = first.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage("sunny", tool_call_id=call["id"])
    second = bound.invoke([asked, first, result])
    assert second.content and not second.tool_calls  # type: ignore[attr-defined]


def test_openai_sdk_parse_n_and_logprobs(client: openai.OpenAI) -> None:
    parsed = client.chat.completions.parse(
        model="sim", messages=[{"role": "user", "content": "hi"}], response_format=Person
    )
    assert isinstance(parsed.choices[0].message.parsed, Person)
    raw = client.chat.completions.with_raw_response.create(
        model="sim",
        messages=[{"role": "user", "content": "hi"}],
        n=3,
        logprobs=True,
        top_logprobs=2,
    )
    assert raw.headers["x-gatewise-model"] == "sim"
    reply = raw.parse()
    assert [c.index for c in reply.choices] == [0, 1, 2]
    logprobs = reply.choices[2].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == reply.choices[2].message.content


def test_openai_sdk_responses_function_call(client: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "Person", "parameters": Person.model_json_schema()}
    reply = client.responses.create(model="sim", input="Describe someone", tools=[tool])  # type: ignore[list-item]
    [call] = reply.output
    assert call.type == "function_call"
    Person.model_validate_json(call.arguments)
