"""Anthropic's Messages API: where a client that speaks Anthropic enters.

`POST /v1/messages` runs through the same pipeline as chat completions (scope, quota,
routing, fallback, blacklist, recording, feedback) as an `Endpoint.MESSAGES` job whose
body stays in Anthropic's shape: an Anthropic upstream gets it as it came, the others
translate it (`providers.anthropic_inbound`). What is Anthropic's here is only HTTP:
the answer under the gateway's own `msg_` id, the stream as Anthropic's named events
(never OpenAI's `[DONE]`), and errors in Anthropic's shape. `POST
/v1/messages/count_tokens` asks the first model that may serve the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.core.errors import (
    Failure,
    GatewayError,
    NoModelAvailable,
    RejectedByUpstream,
    UpstreamFailed,
)
from gateway.core.headers import header_strings
from gateway.core.ids import request_id_from
from gateway.core.types import ENDPOINT_TYPES
from gateway.http.auth import tenant_of
from gateway.http.body import check_message_body, read_json
from gateway.http.disconnect import ClientLeft, unless_client_leaves
from gateway.http.errors import (
    anthropic_error_body,
    anthropic_error_response,
    anthropic_error_type,
    status_of,
)
from gateway.http.heartbeat import NO_HEARTBEATS, NOT_WAITING, Beat, Heartbeats
from gateway.http.inbound import Inbound, send_json
from gateway.http.proxy import (
    Backend,
    FastEndpoint,
    admit,
    check_scope,
    early_lines,
    optimization_of,
    send_last,
    served_lines,
    stopped_midway,
    stream_failure,
    tolerance_of,
)
from gateway.http.streaming import BodyWriter, body_writer, event_stream, once_sent
from gateway.routing.dispatch import Exchange, ReplyJob, Streaming, StreamJob
from providers.base import NO_HEADERS, Call, ChunkStream, Endpoint, Piece, RawChunk, Reply
from providers.errors import NoMemory, ProviderError, RateLimited
from providers.sse import ChunkBatches

__all__ = ["messages_routes"]

_TEXT = ENDPOINT_TYPES[Endpoint.MESSAGES]


def messages_routes(gateway: Backend) -> list[Route]:
    max_body = gateway.config.server.max_body_bytes
    heartbeats = Heartbeats(gateway.config.server.stream_keepalive)
    catalog = gateway.catalog
    dispatcher = gateway.dispatcher
    quota = gateway.quota
    bodies = gateway.bodies

    async def messages(scope: Scope, receive: Receive, send: Send) -> None:
        request = Inbound(scope, receive)
        headers = request.headers
        request_id = request_id_from(headers.get("x-request-id"))
        limits: bytes = b""
        tenant = tenant_of(scope)
        early = NOT_WAITING  # a stream's wait for its first event, its head maybe sent
        flying = False  # counted in flight for its key (max_concurrent) until it ends
        held = bodies.hold()  # the body's memory, until the answer ends
        try:
            body = await read_json(request, max_body, held)
            check_message_body(body)
            optimization = optimization_of(headers.get("x-gatewise-optimize"))
            tolerance = tolerance_of(headers.get("x-gatewise-quality-tolerance"))
            asked = body["model"]
            if tenant is not None:
                asked, optimization, limits = admit(tenant, asked, optimization, quota)
                flying = tenant.concurrency is not None
            target = catalog.resolve(asked, _TEXT)
            conversation = headers.get("x-gatewise-conversation") or _user_id(body)
            args = (request_id, Endpoint.MESSAGES, target, body, optimization, conversation)
            owner = tenant.name if tenant is not None else None
            passed = _passed_on(headers)
            parent = headers.get("traceparent") if gateway.traced else None
            if body.get("stream") is True:
                job = StreamJob(
                    *args,
                    owner=owner,
                    headers=passed,
                    traceparent=parent,
                    tolerance=tolerance,
                    event_memory=held.hold_event,
                )
                writer = body_writer(scope)
                early = heartbeats.early(writer, lambda: early_lines(job, limits))
                with early:
                    events = await unless_client_leaves(scope, receive, dispatcher.run(job))
                answer = _events(events, limits, writer, heartbeats, early.started)
                return await answer(scope, receive, send)
            reply = dispatcher.run(
                ReplyJob(
                    *args,
                    owner=owner,
                    headers=passed,
                    traceparent=parent,
                    tolerance=tolerance,
                    memory=held.take_answer,
                )
            )
            exchange = await unless_client_leaves(scope, receive, reply)
        except GatewayError as exc:
            if tenant is not None and tenant.limited:
                quota.failed(tenant.name)
            if early.started:  # the head is out: an event says it
                kind = anthropic_error_type(status_of(exc)[0])
                return await send_last(send, _error_event(exc.message, kind))
            extra = {"x-request-id": request_id, **header_strings(limits)}
            return await anthropic_error_response(exc, extra)(scope, receive, send)
        except ClientLeft:
            return  # the attempt is recorded as the client's leaving; nobody to answer
        else:
            await _reply(exchange, send, limits)
        finally:
            once_sent(scope, held.release)  # once the client took the answer
            if flying and tenant is not None:
                quota.leave(tenant.name)

    async def count_tokens(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        headers = {"x-request-id": request_id}
        held = bodies.hold()
        try:
            body = await read_json(request, max_body, held)
            check_message_body(body, counting=True)
            tenant = tenant_of(request.scope)
            if tenant is not None:
                check_scope(tenant, body["model"])
            name, reply = await _count(body, _passed_on(request.headers))
        except GatewayError as exc:
            return anthropic_error_response(exc, headers)
        finally:
            held.release()
        headers["x-gatewise-model"] = name
        return Response(orjson.dumps(reply.body), 200, headers, "application/json")

    async def _count(body: dict[str, Any], passed: Mapping[str, str]) -> tuple[str, Reply]:
        """The count of the first of the target's models whose upstream answers it (an
        Anthropic upstream counts; the others estimate). Not a routed answer: nothing
        is recorded against the model."""
        target = catalog.resolve(body["model"], _TEXT)
        unable = catalog.unable(Endpoint.COUNT_TOKENS)
        failures: list[Failure] = []
        for model in target.candidates:
            if model.name in unable or model.provider not in catalog.providers:
                continue
            call = Call(Endpoint.COUNT_TOKENS, body, model.upstream, headers=passed)
            try:
                return model.name, await catalog.provider_for(model).send(call)
            except ProviderError as exc:
                if not exc.blames_model:
                    raise RejectedByUpstream(exc) from None
                failures.append(Failure(model.name, model.provider, exc))
        if failures:
            raise UpstreamFailed(failures)
        raise NoModelAvailable("No model is available to count this request's tokens.")

    return [
        Route("/v1/messages", FastEndpoint(messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]


def _passed_on(headers: Mapping[str, str]) -> Mapping[str, str]:
    """What an Anthropic upstream is told of the client's headers: its betas."""
    beta = headers.get("anthropic-beta")
    return {"anthropic-beta": beta} if beta else NO_HEADERS


def _user_id(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else None


async def _reply(exchange: Exchange[Reply], send: Send, limits: bytes) -> None:
    """A whole Message, under the gateway's own id and model name."""
    reply = exchange.result
    out = reply.body
    out["id"] = exchange.job.response_id
    out["model"] = exchange.model.name
    try:
        await send_json(send, reply.status, orjson.dumps(out), served_lines(exchange, limits))
    finally:
        exchange.close()


def _error_event(message: str, kind: str) -> bytes:
    """An error told in a stream whose head is out, as Anthropic's own streams report
    one: a failure midway, the gateway stopping, or a failure before the answer began
    after an early head."""
    return b"event: error\ndata: " + orjson.dumps(anthropic_error_body(message, kind)) + b"\n\n"


def _events(
    exchange: Streaming[ChunkStream, Sequence[Piece]],
    limits: bytes,
    writer: BodyWriter | None,
    heartbeats: Heartbeats,
    head_sent: bool = False,
) -> Response:
    body = _sse(exchange, writer, heartbeats)
    return event_stream(body, served_lines(exchange, limits), head_sent)


async def _sse(
    exchange: Streaming[ChunkStream, Sequence[Piece]],
    writer: BodyWriter | None,
    heartbeats: Heartbeats = NO_HEARTBEATS,
) -> AsyncIterator[bytes]:
    """Anthropic's events, one write per upstream read; a failure after the first byte
    is an `error` event, as Anthropic sends it. After the first write, an upstream
    Anthropic stream (`ChunkBatches`) is written through the server's `writer` from the
    upstream socket's callback, as the OpenAI path does (gateway/http/proxy.py)."""
    upstream = exchange.result
    rid, name = exchange.job.response_id, exchange.model.name
    error: ProviderError | None = None
    gone = closed = False
    beat: Beat | None = None  # kept alive while its upstream is quiet (heartbeat.py)

    def take(batch: Sequence[Piece]) -> bytes:
        if beat is not None:
            beat.wrote = True
        exchange.observe(batch)
        return _encode(batch, rid, name)

    try:
        if exchange.first is not None:
            yield take(exchange.first)
            if writer is not None:  # the head is out: comments may follow
                beat = heartbeats.add(writer.write_body)
            rest = exchange.rest
            if writer is not None and isinstance(rest, ChunkBatches):
                await rest.relay(lambda batch: writer.write_body(take(batch)))
            else:
                async for batch in rest:
                    yield take(batch)
    except (asyncio.CancelledError, GeneratorExit) as exc:
        cut = stopped_midway(exchange, exc)
        if cut is None:
            gone = True
            raise
        closed = True  # an `error` event a client retries on, as Anthropic's when overloaded
        yield _error_event(cut.message, "overloaded_error")
    except Exception as exc:
        error = stream_failure(exchange, exc)
        closed = True
        await exchange.fail(error)  # a bench it began is stored before the client hears
        # Told to retry: the upstream's rate, or no room for the answer in this worker.
        retry = isinstance(error, RateLimited | NoMemory)
        kind = "overloaded_error" if retry else "api_error"
        yield _error_event(error.message, kind)
    finally:
        heartbeats.discard(beat)
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
        if not closed:
            exchange.close(error, client_gone=gone)


def _encode(batch: Sequence[Piece], response_id: str, model: str) -> bytes:
    out: list[bytes] = []
    for piece in batch:
        if isinstance(piece, RawChunk):  # an Anthropic text delta, as it came
            out.append(piece.sse)
            continue
        event, data = piece
        if event == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                message["id"] = response_id
                message["model"] = model
        name = event or str(data.get("type", "message"))
        out.append(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
    return b"".join(out)
