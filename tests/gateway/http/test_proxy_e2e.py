"""The OpenAI surface end to end: the official SDK -> a real gateway -> a fake upstream.

One gateway process (and one fake upstream) serves the whole module; every test
starts with an unscripted upstream and an empty request log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

SECRET = "sk-upstream-secret-123456"
UNSET_VAR = "SOME_UNSET_VAR_XYZ"
HI = [{"role": "user", "content": "hi"}]

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("proxy-e2e")
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    # A provider whose key comes from a variable that is not set: disabled, not fatal.
    config["providers"].append(
        {"name": "off", "type": "openai", "base_url": up.url, "api_key": f"${{{UNSET_VAR}}}"}
    )
    config["models"].append({"name": "ghost", "provider": "off"})
    # The built-in simulated upstream, so what clients send reaches it the same way.
    config["providers"].append({"name": "sim", "type": "mock", "mock": {"latency_ms": 0}})
    config["models"] += [
        {"name": "sim-painter", "provider": "sim", "conversation_types": ["text-to-image"]},
        {"name": "sim-speaker", "provider": "sim", "conversation_types": ["text-to-audio"]},
    ]
    with GatewayProcess(config, workdir) as process:
        yield process


def assert_openai_error_shape(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    assert SECRET not in response.text and "Traceback" not in response.text
    return body["error"]


# -- chat completions, non-streaming --------------------------------------------------


def test_chat_completion_is_parsed_and_names_the_gateway_model(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    reply = client.chat.completions.create(model="alpha", messages=HI)
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "alpha"
    assert reply.usage is not None and reply.usage.total_tokens == 18
    [seen] = up.calls("/chat/completions")
    assert seen.body["model"] == "alpha-up"
    assert seen.body["messages"] == HI


def test_upstream_gets_the_provider_key_not_the_client_key(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    client.chat.completions.create(model="alpha", messages=HI)
    [seen] = up.seen
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert "test-key" not in " ".join(seen.headers.values())


def test_unknown_request_fields_reach_the_upstream_intact(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    client.chat.completions.create(
        model="alpha",
        messages=HI,
        temperature=0.5,
        extra_body={"some_new_param": {"x": 1}, "another": [1, "two", None]},
    )
    [seen] = up.seen
    assert seen.body["some_new_param"] == {"x": 1}
    assert seen.body["another"] == [1, "two", None]
    assert seen.body["temperature"] == 0.5


def test_gateway_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="alpha", messages=HI)
    assert raw.headers["x-gatewise-model"] == "alpha"
    assert raw.headers["x-gatewise-provider"] == "up"
    assert raw.headers["x-gatewise-attempts"] == "1"
    assert raw.headers["x-request-id"]
    assert raw.parse().model == "alpha"


def test_every_answer_tells_browsers_not_to_sniff_it_and_names_no_server_software(
    gw: GatewayProcess, client: openai.OpenAI
) -> None:
    """A JSON answer or error echoes client text; sniffed as markup, it would run. And
    no answer tells a stranger which server (and version range) to aim at."""
    raw = client.chat.completions.with_raw_response.create(model="alpha", messages=HI)
    replies = [raw.http_response]
    key = {"authorization": "Bearer test-key"}
    replies += [
        httpx.get(gw.url + "/v1/models", headers=key),
        httpx.post(gw.url + "/v1/chat/completions", content=b"<script>", headers=key),
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "alpha"}),  # no key
        httpx.get(gw.url + "/healthz"),
        httpx.get(gw.url + "/performance"),
        httpx.get(gw.url + "/no-such-page"),
    ]
    for reply in replies:
        assert reply.headers.get("x-content-type-options") == "nosniff", reply.url
        assert "server" not in reply.headers, reply.url
    assert [r.status_code for r in replies] == [200, 200, 400, 401, 200, 200, 404]


def test_client_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="alpha", messages=HI, extra_headers={"x-request-id": "my-trace-0042"}
    )
    assert raw.headers["x-request-id"] == "my-trace-0042"


@pytest.mark.parametrize("unsafe", ["has spaces in it", "x" * 200, "semi;colon"])
def test_unsafe_client_request_id_is_replaced(client: openai.OpenAI, unsafe: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="alpha", messages=HI, extra_headers={"x-request-id": unsafe}
    )
    echoed = raw.headers["x-request-id"]
    assert echoed != unsafe
    assert re.fullmatch(r"req_[0-9a-f]{43}", echoed)  # 11 hex of ms, 32 random


def test_response_ids_are_unguessable_and_not_the_upstreams(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="alpha", messages=HI)
    second = client.chat.completions.create(model="alpha", messages=HI)
    assert first.id != second.id
    for reply in (first, second):
        assert "up" not in reply.id  # the fake upstream's ids are chatcmpl-upN
        # at least 128 bits of randomness after the prefix
        assert re.fullmatch(r"chatcmpl-[0-9a-f]{32,}", reply.id), reply.id


# -- the other endpoints ----------------------------------------------------------------


def test_embeddings(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.embeddings.create(model="embedder", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in reply.data] == [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]
    assert reply.model == "embedder"
    [seen] = up.calls("/embeddings")
    assert seen.body["input"] == ["a", "b"]


def test_models_list_has_models_and_routes(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    for name in ("alpha", "beta", "gamma", "embedder", "painter", "speaker", "filmmaker"):
        assert name in ids
    assert "auto" in ids
    assert "ghost" not in ids  # its provider is disabled


def test_images_generate(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.images.generate(model="painter", prompt="a lighthouse")
    assert reply.data is not None and reply.data[0].url == "https://img.invalid/1.png"
    [seen] = up.calls("/images/generations")
    assert seen.body == {"model": "painter", "prompt": "a lighthouse"}


def test_audio_speech_returns_the_upstream_bytes(client: openai.OpenAI) -> None:
    audio = client.audio.speech.create(model="speaker", input="hello", voice="alloy")
    assert audio.content.startswith(b"RIFF")


@pytest.mark.parametrize("fmt", ["b64_json", "url"])
def test_images_response_format_is_a_format_name(
    client: openai.OpenAI, up: FakeUpstream, fmt: str
) -> None:
    reply = client.images.generate(model="painter", prompt="a lighthouse", response_format=fmt)
    assert reply.data is not None
    [seen] = up.calls("/images/generations")
    assert seen.body["response_format"] == fmt
    mocked = client.images.generate(model="sim-painter", prompt="a lighthouse", response_format=fmt)
    assert mocked.data is not None
    assert mocked.data[0].b64_json if fmt == "b64_json" else mocked.data[0].url


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_response_format_is_a_format_name(
    client: openai.OpenAI, up: FakeUpstream, fmt: str
) -> None:
    audio = client.audio.speech.create(
        model="speaker", input="hello", voice="alloy", response_format=fmt
    )
    assert audio.content.startswith(b"RIFF")
    [seen] = up.calls("/audio/speech")
    assert seen.body["response_format"] == fmt
    mocked = client.audio.speech.with_raw_response.create(
        model="sim-speaker", input="hello", voice="alloy", response_format=fmt
    )
    # the content type says what the bytes are (the mock encodes mp3, wav and pcm only)
    sent = {"mp3": "audio/mpeg", "pcm": "audio/pcm"}.get(fmt, "audio/wav")
    assert mocked.headers["content-type"] == sent
    assert mocked.content.startswith(b"RIFF") == (sent == "audio/wav")
    assert mocked.headers["x-gatewise-model"] == "sim-speaker"


def test_a_response_format_of_the_wrong_shape_is_still_refused(gw: GatewayProcess) -> None:
    body = {"model": "painter", "prompt": "x", "response_format": {"type": "url"}}
    r = httpx.post(
        gw.url + "/v1/images/generations",
        json=body,
        headers={"authorization": "Bearer test-key"},
    )
    assert r.status_code == 400
    error = assert_openai_error_shape(r)
    assert error["param"] == "response_format" and "expected a string" in error["message"]


def test_legacy_completions(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.completions.create(model="alpha", prompt="Say hi")
    assert reply.choices[0].text == "Hello from the fake upstream."
    assert reply.model == "alpha"
    assert up.calls("/completions")[0].body["model"] == "alpha-up"


def test_responses_pass_through(client: openai.OpenAI, up: FakeUpstream) -> None:
    reply = client.responses.create(model="alpha", input="hi", extra_body={"new_knob": True})
    assert reply.model == "alpha"
    assert reply.status == "completed"
    assert reply.id.startswith("resp_") and "up" not in reply.id
    [seen] = up.calls("/responses")
    assert seen.body["model"] == "alpha-up"
    assert seen.body["input"] == "hi" and seen.body["new_knob"] is True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK flags the Sora API
def test_videos_create_multipart_and_retrieve(client: openai.OpenAI, up: FakeUpstream) -> None:
    job = client.videos.create(model="filmmaker", prompt="a cat on a skateboard", seconds="4")
    assert job.status == "queued"
    assert job.model == "filmmaker"
    assert job.id.startswith("video_") and "up" not in job.id
    [created] = up.calls("/videos")
    assert created.body["model"] == "filmmaker"
    assert created.body["prompt"] == "a cat on a skateboard"
    status = client.videos.retrieve(job.id)
    assert status.id == job.id
    assert status.status == "completed"
    gets = [s for s in up.seen if s.method == "GET"]
    assert len(gets) == 1 and gets[0].path.startswith("/videos/video_up")


# -- errors as the SDK's typed exceptions ------------------------------------------------


def test_unknown_model_is_not_found(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HI)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "no-such-model" in caught.value.message
    assert_openai_error_shape(caught.value.response)
    assert up.seen == []


def test_wrong_key_is_rejected(gw: GatewayProcess, up: FakeUpstream) -> None:
    with (
        openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong-key", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        bad.chat.completions.create(model="alpha", messages=HI)
    assert caught.value.status_code == 401
    error = assert_openai_error_shape(caught.value.response)
    assert "wrong-key" not in caught.value.response.text
    assert error["code"] == "invalid_api_key"
    assert up.seen == []


def test_missing_key_is_rejected(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(
            model="alpha", messages=HI, extra_headers={"Authorization": openai.omit}
        )
    assert caught.value.status_code == 401
    assert "authorization" not in {k.lower() for k in caught.value.request.headers}
    assert_openai_error_shape(caught.value.response)
    assert up.seen == []


def test_error_body_has_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="nope", input="x", encoding_format="float")
    error = assert_openai_error_shape(caught.value.response)
    assert "nope" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    assert caught.value.response.headers["content-type"].startswith("application/json")


# -- health, readiness, disabled providers ----------------------------------------------


def test_healthz(gw: GatewayProcess) -> None:
    response = httpx.get(gw.url + "/healthz")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "auth", "status"),
    [
        ("GET", "/healthz", False, 200),
        ("GET", "/readyz", False, 200),
        ("GET", "/v1/models", True, 200),
        ("GET", "/v1/models", False, 401),
        ("POST", "/v1/chat/completions", False, 401),  # the fast path's key check
        ("GET", "/v1/chat/completions", True, 405),
        ("GET", "/nowhere", True, 404),
        ("GET", "/performance", False, 200),
    ],
)
def test_every_answer_carries_a_request_id(
    gw: GatewayProcess, method: str, path: str, auth: bool, status: int
) -> None:
    headers = {"authorization": "Bearer test-key"} if auth else {}
    response = httpx.request(method, gw.url + path, headers=headers, json={})
    assert response.status_code == status
    assert re.fullmatch(r"req_\w+", response.headers["x-request-id"])
    assert len(response.headers.get_list("x-request-id")) == 1
    echoed = httpx.request(method, gw.url + path, headers={**headers, "x-request-id": "mine-1"})
    assert echoed.headers["x-request-id"] == "mine-1"


def test_a_stream_names_the_model_that_served_it_in_its_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="alpha", messages=HI, stream=True
    ) as response:
        assert response.headers["x-gatewise-model"] == "alpha"
        assert response.headers["x-request-id"]
        assert list(response.iter_lines())


def test_readyz_lists_models_and_names_the_missing_variable(gw: GatewayProcess) -> None:
    response = httpx.get(gw.url + "/readyz")
    assert response.status_code == 200
    body = response.json()
    for name in ("alpha", "beta", "gamma", "embedder"):
        assert name in body["models"]
    assert "ghost" not in body["models"]
    assert UNSET_VAR in response.text
    assert {"provider": "off", "missing_env": [UNSET_VAR]} in body["disabled_providers"]


def test_model_of_a_disabled_provider_is_a_clear_503(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="ghost", messages=HI)
    assert caught.value.status_code == 503
    assert UNSET_VAR in caught.value.message
    assert "ghost" in caught.value.message
    assert caught.value.code == "provider_disabled"
    assert_openai_error_shape(caught.value.response)
    assert up.seen == []
