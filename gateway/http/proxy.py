"""The OpenAI-compatible HTTP surface. HTTP concerns live here and nowhere else."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.core.ids import request_id_from
from gateway.core.types import ENDPOINT_TYPES, OPTIMIZATIONS, Endpoint
from gateway.http.body import check_body, read_json
from gateway.http.errors import GatewayError, error_body, error_response
from gateway.http.inbound import Inbound, send_json
from gateway.http.streaming import StreamingResponse
from gateway.routing.answers import StreamAnswer, answer_from_body
from gateway.routing.dispatch import Job, Served
from providers.base import Call, ChunkStream
from providers.errors import ProviderError, UpstreamServerError

if TYPE_CHECKING:
    from gateway.server.app import Gateway

__all__ = ["fast_handlers", "proxy_routes"]

log = logging.getLogger("gatewise")

_STREAMABLE = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES})
_HAS_ID = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.VIDEOS})
_JSON = "application/json"


class _VideoJobs:
    """Which model and upstream job answer a gateway video id (bounded, newest kept)."""

    def __init__(self, size: int = 10_000) -> None:
        self._jobs: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size

    def add(self, video_id: str, model: str, upstream_id: str) -> None:
        self._jobs[video_id] = (model, upstream_id)
        if len(self._jobs) > self._size:
            self._jobs.popitem(last=False)

    def get(self, video_id: str) -> tuple[str, str] | None:
        return self._jobs.get(video_id)


def proxy_routes(gateway: Gateway) -> list[Route]:
    videos = _VideoJobs()

    def served_headers(job: Job, served: Served[Any]) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-request-id", job.request_id.encode()),
            (b"x-gatewise-model", served.model.name.encode()),
            (b"x-gatewise-provider", served.provider.encode()),
            (b"x-gatewise-attempts", b"%d" % served.attempts),
            (b"x-gatewise-response-id", job.response_id.encode()),
        ]

    async def prepare(request: Inbound, endpoint: Endpoint, request_id: str) -> Job:
        body = await read_json(request, gateway.config.server.max_body_bytes)
        check_body(endpoint, body)
        optimization = request.headers.get("x-gatewise-optimize")
        if optimization is not None and optimization not in OPTIMIZATIONS:
            raise GatewayError(
                400,
                f"Invalid x-gatewise-optimize header '{optimization}': expected one of "
                f"{', '.join(OPTIMIZATIONS)}.",
                param="x-gatewise-optimize",
            )
        ctype = ENDPOINT_TYPES[endpoint]
        target = gateway.catalog.resolve(body["model"], ctype)
        conversation = request.headers.get("x-gatewise-conversation") or body.get("user")
        return gateway.dispatcher.job(
            request_id,
            endpoint,
            target,
            body,
            ctype,
            optimization=optimization,
            conversation_id=conversation if isinstance(conversation, str) else None,
        )

    def handler(endpoint: Endpoint) -> _Endpoint:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            request = Inbound(scope, receive)
            request_id = request_id_from(request.headers.get("x-request-id"))
            try:
                job = await prepare(request, endpoint, request_id)
                if endpoint is Endpoint.SPEECH:
                    response = await binary(job)
                    return await response(scope, receive, send)
                if job.body.get("stream") is True and endpoint in _STREAMABLE:
                    response = await stream(job)
                    return await response(scope, receive, send)
                served = await gateway.dispatcher.send(job, record=False)
            except GatewayError as exc:
                response = error_response(exc, {"x-request-id": request_id})
                return await response(scope, receive, send)
            out = served.result.body
            answer = answer_from_body(endpoint, out)
            if endpoint is Endpoint.VIDEOS and isinstance(out.get("id"), str):
                videos.add(job.response_id, served.model.name, out["id"])
            if endpoint in _HAS_ID:
                out["id"] = job.response_id
            if "model" in out or endpoint is not Endpoint.IMAGES:
                out["model"] = served.model.name
            try:
                await send_json(
                    send,
                    served.result.status,
                    orjson.dumps(out),
                    [
                        (b"x-request-id", job.request_id.encode()),
                        (b"x-gatewise-model", served.model.name.encode()),
                        (b"x-gatewise-provider", served.provider.encode()),
                        (b"x-gatewise-attempts", b"%d" % served.attempts),
                        (b"x-gatewise-response-id", job.response_id.encode()),
                    ],
                )
            finally:
                # Bookkeeping once the answer is out: none of it is the client's wait,
                # and the upstream's answer counts even if the client has gone.
                attempt = gateway.dispatcher.finish(job, served, served.result.usage)
                gateway.evaluator.answered(job, attempt, answer)

        return _Endpoint(handle)

    async def stream(job: Job) -> Response:
        served = await gateway.dispatcher.stream(job)
        response = StreamingResponse(
            sse(job, served), headers={"cache-control": "no-cache"}, media_type="text/event-stream"
        )
        response.raw_headers += served_headers(job, served)
        return response

    async def sse(job: Job, served: Served[ChunkStream]) -> AsyncIterator[bytes]:
        upstream = served.result
        error: ProviderError | None = None
        name, rid = served.model.name, job.response_id
        named = job.endpoint is Endpoint.RESPONSES
        answer = StreamAnswer()
        # Exactly one end marker, whatever the upstream's end looked like: it rides on
        # the last write when the upstream's end came with content, else goes alone.
        done = b"" if named else b"data: [DONE]\n\n"
        try:
            if served.first is not None:
                out = _encode_batch(served.first, answer, rid, name)
                if upstream.complete:
                    out, done = out + done, b""
                yield out
                async for batch in served.extra["chunks"]:
                    out = _encode_batch(batch, answer, rid, name)
                    if upstream.complete:
                        out, done = out + done, b""
                    yield out
            if done:
                yield done
        except Exception as exc:  # after the first byte, the stream is all we can report on
            error = (
                exc
                if isinstance(exc, ProviderError)
                else UpstreamServerError(
                    f"{served.provider}: the stream failed ({type(exc).__name__})"
                )
            )
            body = error_body(error.message, "server_error", error.kind)
            yield b"data: " + orjson.dumps(body) + b"\n\n" + done
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
            attempt = gateway.dispatcher.finish(
                job, served, upstream.usage, error, served.extra["ttft"]
            )
            if error is None:
                gateway.evaluator.answered(job, attempt, answer.result())

    async def binary(job: Job) -> Response:
        served = await gateway.dispatcher.binary(job)
        reply = served.result

        async def body() -> AsyncIterator[bytes]:
            try:
                if served.first:
                    yield served.first
                async for piece in served.extra["chunks"]:
                    yield piece
            finally:
                with anyio.CancelScope(shield=True):
                    await reply.aclose()
                attempt = gateway.dispatcher.finish(job, served, reply.usage)
                gateway.evaluator.answered(job, attempt, None)

        response = StreamingResponse(body(), media_type=reply.media_type)
        response.raw_headers += served_headers(job, served)
        return response

    async def video_status(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        video_id = request.path_params["video_id"]
        found = videos.get(video_id)
        if found is None:
            exc = GatewayError(404, f"No video job with id '{video_id}'.", code="not_found")
            return error_response(exc, {"x-request-id": request_id})
        model_name, upstream_id = found
        model = gateway.catalog.models[model_name]
        call = Call(Endpoint.VIDEO_STATUS, {}, model.upstream, resource_id=upstream_id)
        try:
            reply = await gateway.catalog.provider_for(model).send(call)
        except ProviderError as exc:
            status = exc.status if exc.status and exc.status < 500 else 502
            return error_response(
                GatewayError(status, exc.message, type="server_error", code=exc.kind),
                {"x-request-id": request_id},
            )
        out = {**reply.body, "id": video_id, "model": model_name}
        headers = {
            "x-request-id": request_id,
            "x-gatewise-model": model_name,
            "x-gatewise-provider": model.provider,
        }
        return Response(orjson.dumps(out), 200, headers, _JSON)

    async def feedback(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            body = await read_json(request, gateway.config.server.max_body_bytes)
            assert gateway.feedback is not None
            result = await gateway.feedback.submit(body)
        except GatewayError as exc:
            return error_response(exc, {"x-request-id": request_id})
        return Response(orjson.dumps(result), 200, {"x-request-id": request_id}, _JSON)

    async def list_models(request: Request) -> Response:
        body = {"object": "list", "data": gateway.catalog.listing()}
        return Response(orjson.dumps(body), 200, media_type=_JSON)

    async def retrieve_model(request: Request) -> Response:
        name = request.path_params["model"]
        for entry in gateway.catalog.listing():
            if entry["id"] == name:
                return Response(orjson.dumps(entry), 200, media_type=_JSON)
        return error_response(
            GatewayError(
                404, f"The model '{name}' does not exist.", code="model_not_found", param="model"
            )
        )

    post = ["POST"]
    routes = [
        Route("/v1/chat/completions", handler(Endpoint.CHAT), methods=post),
        Route("/v1/completions", handler(Endpoint.COMPLETIONS), methods=post),
        Route("/v1/embeddings", handler(Endpoint.EMBEDDINGS), methods=post),
        Route("/v1/images/generations", handler(Endpoint.IMAGES), methods=post),
        Route("/v1/audio/speech", handler(Endpoint.SPEECH), methods=post),
        Route("/v1/videos", handler(Endpoint.VIDEOS), methods=post),
        Route("/v1/videos/{video_id}", video_status, methods=["GET"]),
        Route("/v1/responses", handler(Endpoint.RESPONSES), methods=post),
        Route("/v1/feedback", feedback, methods=post),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    ]
    return routes


class _Endpoint:
    """An ASGI endpoint: Starlette routes call it as an app, the fast path directly."""

    def __init__(self, handle: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.handle(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(
                GatewayError(
                    500,
                    "The gateway hit an internal error.",
                    type="server_error",
                    code="internal_error",
                )
            )
            await response(scope, receive, send)


def fast_handlers(routes: list[Route]) -> dict[str, Callable[[Scope, Receive, Send], Any]]:
    """The POST endpoints that the app serves straight from a dict, ahead of Starlette's
    router and middleware: the proxy's own cost is the product (see gateway/app.py)."""
    return {r.path: r.endpoint for r in routes if isinstance(r.endpoint, _Endpoint)}


def _encode_batch(
    batch: list[tuple[str | None, dict[str, Any]]], answer: StreamAnswer, rid: str, model: str
) -> bytes:
    for chunk in batch:
        answer.add(*chunk)
    if len(batch) == 1:
        return _encode(batch[0], rid, model)
    return b"".join([_encode(chunk, rid, model) for chunk in batch])


def _encode(chunk: tuple[str | None, dict[str, Any]], response_id: str, model: str) -> bytes:
    event, data = chunk
    if event is None:
        data["id"] = response_id
        data["model"] = model
        return b"data: " + orjson.dumps(data) + b"\n\n"
    inner = data.get("response")
    if isinstance(inner, dict):
        inner["id"] = response_id
        inner["model"] = model
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
