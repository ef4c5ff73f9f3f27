"""An upstream's absurd usage figures, end to end: a real gateway on SQLite, a fake
upstream, the official SDK. Found by a misbehaving upstream in a fuzz run: a video whose
"seconds" was "nan" priced its answer at NaN, which SQLite stores as NULL; the store
refused the batch (attempts.cost is NOT NULL) and the writer retried it at every flush,
so nothing answered after it was ever stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from tests.conftest import upstream_config
from tests.gateway.server.test_shutdown_e2e import within
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI: list[Any] = [{"role": "user", "content": "hi"}]


def stored(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM attempts")}


def test_absurd_usage_is_taken_as_none_and_every_answer_is_stored(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.behave(
        "filmmaker", body=orjson.dumps({"id": "v1", "object": "video", "seconds": "nan"})
    )
    huge = {"prompt_tokens": 2**64 - 1, "completion_tokens": -7, "total_tokens": 1}
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "alpha-up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": huge,
    }
    upstream.behave("alpha-up", body=orjson.dumps(answer))
    config = upstream_config(upstream)
    for model in config["models"]:
        if model["name"] == "filmmaker":
            model["pricing"] = {"per_second": 0.1}
    db = tmp_path / "gw.db"
    config["storage"] = {"url": f"sqlite:///{db}", "flush_interval": 0.1}
    gw = GatewayProcess(config, tmp_path).start()
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)
        video = httpx.post(  # the SDK's videos are deprecated: its warning fails the test
            gw.url + "/v1/videos",
            json={"model": "filmmaker", "prompt": "a cat"},
            headers={"authorization": "Bearer test-key"},
            timeout=10,
        )
        assert video.status_code == 200, video.text
        chat = client.chat.completions.with_raw_response.create(model="alpha", messages=HI)
        after = client.chat.completions.with_raw_response.create(model="beta", messages=HI)
        asked = [r.headers["x-request-id"] for r in (video, chat, after)]
        within(10, lambda: set(asked) <= set(stored(db)))
        rows = stored(db)
        assert [rows[rid]["cost"] for rid in asked[:2]] == [0.0, 0.0]
        assert (rows[asked[1]]["prompt_tokens"], rows[asked[1]]["completion_tokens"]) == (0, 0)
        assert "Traceback" not in gw.logs() and "store write failed" not in gw.logs()
    finally:
        gw.stop()
