"""The OpenAI-compatible surface: where a client's request enters.

A handler reads and checks the body, resolves the requested model or route, builds
the job, runs it (`Dispatcher.run`) and delivers the exchange it gets back: a JSON
reply, server-sent events or audio. When the delivery ends, however it ends, the
handler closes the exchange, which records the outcome. HTTP concerns live here and
in the rest of gateway/http, nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.core.config import Config
from gateway.core.errors import (
    Failure,
    GatewayError,
    InvalidRequest,
    NotAllowed,
    NotFound,
    RejectedByUpstream,
    ShuttingDown,
    UpstreamFailed,
)
from gateway.core.headers import header_pairs, header_strings, render_headers
from gateway.core.ids import request_id_from
from gateway.core.keys import KeyRing, Tenant
from gateway.core.types import ENDPOINT_TYPES, OPTIMIZATIONS, Optimization
from gateway.http.auth import tenant_of
from gateway.http.body import BodyBudget, check_body, read_json
from gateway.http.disconnect import ClientLeft, unless_client_leaves
from gateway.http.errors import error_body, error_response, internal_error, status_of
from gateway.http.heartbeat import NO_HEARTBEATS, NOT_WAITING, Beat, Heartbeats
from gateway.http.inbound import Inbound, send_json
from gateway.http.request_id import stamped
from gateway.http.streaming import (
    BodyWriter,
    StreamingResponse,
    body_writer,
    event_stream,
    event_stream_lines,
    once_sent,
)
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import (
    AudioJob,
    Dispatcher,
    Exchange,
    Job,
    ReplyJob,
    Streaming,
    StreamJob,
)
from gateway.routing.feedback import MAX_FEEDBACK_BYTES, FeedbackService
from gateway.routing.pairwise import PairwiseService
from gateway.routing.quota import Quota
from providers.base import BinaryReply, Call, Chunk, ChunkStream, Endpoint, Piece, RawChunk
from providers.errors import GatewayStopped, ProviderError, UpstreamServerError, stopped
from providers.sse import ChunkBatches

__all__ = [
    "Backend",
    "FastEndpoint",
    "admit",
    "check_scope",
    "early_lines",
    "fast_handlers",
    "optimization_of",
    "proxy_routes",
    "send_last",
    "served_lines",
    "stopped_midway",
    "stream_failure",
    "tolerance_of",
]

log = logging.getLogger("gatewise")

_STREAMABLE = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES})
_HAS_ID = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.VIDEOS})
_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"


_EARLY = b"x-request-id: %s\r\nx-gatewise-response-id: %s\r\n"
_SERVED = (
    b"x-request-id: %s\r\nx-gatewise-model: %s\r\nx-gatewise-provider: %s\r\n"
    b"x-gatewise-attempts: %d\r\nx-gatewise-response-id: %s\r\n%s"
)


class Backend(Protocol):
    """What the HTTP layer needs from the process that serves it (`gateway.server.app`)."""

    config: Config
    keys: KeyRing
    catalog: Catalog
    dispatcher: Dispatcher
    feedback: FeedbackService
    pairwise: PairwiseService
    quota: Quota
    traced: bool  # spans are made: a client's traceparent is read
    bodies: BodyBudget  # the request bodies this worker holds, bounded together

    @property
    def ready(self) -> bool: ...

    def storage(self) -> dict[str, object]: ...


class _VideoJobs:
    """Which model and upstream job answer a gateway video id (bounded, newest kept)."""

    def __init__(self, size: int = 10_000) -> None:
        self._jobs: OrderedDict[str, tuple[str, str, str | None]] = OrderedDict()
        self._size = size

    def add(self, video_id: str, model: str, upstream_id: str, owner: str | None) -> None:
        self._jobs[video_id] = (model, upstream_id, owner)
        if len(self._jobs) > self._size:
            self._jobs.popitem(last=False)

    def get(self, video_id: str, caller: Tenant | None) -> tuple[str, str] | None:
        """The job's model and upstream id, if `caller` may see it (as for ratings)."""
        found = self._jobs.get(video_id)
        if found is None or not (caller is None or found[2] in (None, caller.name)):
            return None
        return found[0], found[1]


def served_lines(exchange: Exchange[Any], limits: bytes = b"") -> bytes:
    """The header lines every answer carries (gateway.core.headers): what served it,
    its ids, and the key's x-ratelimit-* lines. Model and provider names are checked
    for what a header may hold when the configuration loads; ids are the gateway's."""
    job = exchange.job
    lines = _SERVED % (
        job.request_id.encode(),
        exchange.model.name.encode(),
        exchange.provider.encode(),
        exchange.number,
        job.response_id.encode(),
        limits,
    )
    if job.experiment is not None and job.arm is not None:
        lines += render_headers(
            ((b"x-gatewise-experiment", job.experiment.encode()),
             (b"x-gatewise-arm", job.arm.encode()))
        )  # fmt: skip
    return lines


def early_lines(job: Job[Any, Any], limits: bytes = b"") -> bytes:
    """The header lines of a stream's head sent before its answer began (`EarlyHead`):
    its ids and the key's x-ratelimit-* lines, but not yet the model that answers."""
    ids = _EARLY % (job.request_id.encode(), job.response_id.encode())
    return event_stream_lines(ids + limits)


async def send_last(send: Send, data: bytes) -> None:
    """The last piece of a streamed body whose head is out."""
    await send({"type": "http.response.body", "body": data, "more_body": False})


def proxy_routes(gateway: Backend) -> list[Route]:
    videos = _VideoJobs()
    max_body = gateway.config.server.max_body_bytes
    heartbeats = Heartbeats(gateway.config.server.stream_keepalive)
    catalog = gateway.catalog
    dispatcher = gateway.dispatcher
    quota = gateway.quota
    traced = gateway.traced
    bodies = gateway.bodies

    def handler(endpoint: Endpoint) -> FastEndpoint:
        ctype = ENDPOINT_TYPES[endpoint]
        streamable = endpoint in _STREAMABLE

        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
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
                check_body(endpoint, body)
                optimization = optimization_of(headers.get("x-gatewise-optimize"))
                tolerance = tolerance_of(headers.get("x-gatewise-quality-tolerance"))
                asked = body["model"]
                if tenant is not None:
                    asked, optimization, limits = admit(tenant, asked, optimization, quota)
                    flying = tenant.concurrency is not None
                target = catalog.resolve(asked, ctype)
                conversation = headers.get("x-gatewise-conversation") or body.get("user")
                args = (request_id, endpoint, target, body, optimization)
                conversation_id = conversation if isinstance(conversation, str) else None
                owner = tenant.name if tenant is not None else None
                parent = headers.get("traceparent") if traced else None
                if endpoint is Endpoint.SPEECH:
                    speech = dispatcher.run(
                        AudioJob(
                            *args,
                            conversation_id,
                            owner=owner,
                            traceparent=parent,
                            tolerance=tolerance,
                        )
                    )
                    audio = await unless_client_leaves(scope, receive, speech)
                    return await _audio(audio, limits)(scope, receive, send)
                if streamable and body.get("stream") is True:
                    job = StreamJob(
                        *args,
                        conversation_id,
                        owner=owner,
                        traceparent=parent,
                        tolerance=tolerance,
                        event_memory=held.hold_event,
                    )
                    writer = body_writer(scope)
                    early = heartbeats.early(writer, lambda: early_lines(job, limits))
                    with early:
                        events = await unless_client_leaves(scope, receive, dispatcher.run(job))
                    answer = _events(events, writer, limits, heartbeats, early.started)
                    return await answer(scope, receive, send)
                reply = dispatcher.run(
                    ReplyJob(
                        *args,
                        conversation_id,
                        owner=owner,
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
                    body = error_body(exc.message, status_of(exc)[1], exc.code, exc.param)
                    return await send_last(send, _error_event(body, _done(endpoint)))
                extra = {"x-request-id": request_id, **header_strings(limits)}
                return await error_response(exc, extra)(scope, receive, send)
            except ClientLeft:
                return  # the attempt is recorded as the client's leaving; nobody to answer
            else:
                await _reply(exchange, send, videos, limits)
            finally:
                once_sent(scope, held.release)  # once the client took the answer
                if flying and tenant is not None:
                    quota.leave(tenant.name)

        return FastEndpoint(handle)

    async def video_status(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        video_id = request.path_params["video_id"]
        found = videos.get(video_id, tenant_of(request.scope))
        if found is None:
            missing = NotFound(f"No video job with id '{video_id}'.")
            return error_response(missing, {"x-request-id": request_id})
        model_name, upstream_id = found
        model = catalog.models[model_name]
        call = Call(Endpoint.VIDEO_STATUS, {}, model.upstream, resource_id=upstream_id)
        try:
            reply = await catalog.provider_for(model).send(call)
        except ProviderError as exc:
            error: GatewayError = (
                UpstreamFailed([Failure(model.name, model.provider, exc)])
                if exc.blames_model
                else RejectedByUpstream(exc)
            )
            return error_response(error, {"x-request-id": request_id})
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
            body = await read_json(request, min(max_body, MAX_FEEDBACK_BYTES))
            result = await gateway.feedback.submit(body, tenant_of(request.scope))
        except GatewayError as exc:
            return error_response(exc, {"x-request-id": request_id})
        return Response(orjson.dumps(result), 200, {"x-request-id": request_id}, _JSON)

    async def list_models(request: Request) -> Response:
        tenant = tenant_of(request.scope)
        listing = catalog.listing()
        if tenant is not None and tenant.allowed is not None:
            listing = [entry for entry in listing if tenant.may_use(str(entry["id"]))]
        body = {"object": "list", "data": listing}
        return Response(orjson.dumps(body), 200, media_type=_JSON)

    async def retrieve_model(request: Request) -> Response:
        name = request.path_params["model"]
        tenant = tenant_of(request.scope)
        for entry in catalog.listing():
            if tenant is not None and not tenant.may_use(str(entry["id"])):
                continue
            if entry["id"] == name:
                return Response(orjson.dumps(entry), 200, media_type=_JSON)
        missing = NotFound(
            f"The model '{name}' does not exist.", code="model_not_found", param="model"
        )
        return error_response(missing)

    post = ["POST"]
    return [
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


def stream_failure(exchange: Exchange[Any], exc: Exception) -> ProviderError:
    """What broke a stream after its first byte, as the upstream's error (a bug in
    reading it counts as the upstream's server error: its stream is what failed).

    Without its traceback: the stream's handler keeps the error, and the traceback keeps
    the handler's frame (and the stream's buffers, in the reader's frames) in a cycle
    that only the collector's rare full pass frees."""
    if isinstance(exc, ProviderError):
        return exc.with_traceback(None)
    return UpstreamServerError(f"{exchange.provider}: the stream failed ({type(exc).__name__})")


def stopped_midway(exchange: Exchange[Any], exc: BaseException) -> GatewayStopped | None:
    """If `exc` is the server's shutdown deadline landing in a stream under way (not the
    client's leaving): the stream's task goes on to tell its client, and the exchange is
    closed as cut by the gateway, which blames no model. None otherwise."""
    if not stopped(exc):
        return None
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    error = _cut()
    exchange.close(error)
    return error


def _cut() -> GatewayStopped:
    return GatewayStopped(
        "the gateway is shutting down and ended this stream at its drain deadline; "
        "retry the request",
        status=503,
    )


def admit(
    tenant: Tenant, asked: object, optimization: Optimization | None, quota: Quota
) -> tuple[object, Optimization | None, bytes]:
    """A key's request as it is served: within its scope (or NotAllowed), with its
    default optimization, counted against its limits (or RateLimitExceeded,
    QuotaExceeded), and moved to its cheaper route once its budget is spent. Returns
    what to serve, how, and the x-ratelimit-* header lines for the answer."""
    check_scope(tenant, asked)
    limits: bytes = b""
    if tenant.limited:
        route, limits = quota.admit(tenant)
        asked = route or asked
    return asked, optimization or tenant.optimization, limits


def check_scope(tenant: Tenant, name: object) -> None:
    if isinstance(name, str) and not tenant.may_use(name):
        raise NotAllowed(
            f"This API key may not use '{name}'; ask the gateway's operator for access.",
            param="model",
        )


def optimization_of(header: str | None) -> Optimization | None:
    if header is None:
        return None
    for optimization in OPTIMIZATIONS:
        if header == optimization:
            return optimization
    raise InvalidRequest(
        f"Invalid x-gatewise-optimize header '{header}': expected one of "
        f"{', '.join(OPTIMIZATIONS)}.",
        param="x-gatewise-optimize",
    )


def tolerance_of(header: str | None) -> float | None:
    """x-gatewise-quality-tolerance: a fraction of the best expected quality, 0 to 1."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also NaN
        raise InvalidRequest(
            f"Invalid x-gatewise-quality-tolerance header '{header[:64]}': expected a number "
            "from 0 to 1, the fraction of the best model's expected quality a cheaper model "
            "may fall short by (e.g. 0.05).",
            param="x-gatewise-quality-tolerance",
        )
    return value


async def _reply(
    exchange: Exchange[Any], send: Send, videos: _VideoJobs, limits: bytes = b""
) -> None:
    """A whole answer, as JSON under the gateway's own response id and model name."""
    job = exchange.job
    name = exchange.model.name
    reply = exchange.result
    out = reply.body
    endpoint = job.endpoint
    if endpoint is Endpoint.VIDEOS and isinstance(out.get("id"), str):
        videos.add(job.response_id, name, out["id"], job.owner)
    if endpoint in _HAS_ID:
        out["id"] = job.response_id
    if "model" in out or endpoint is not Endpoint.IMAGES:
        out["model"] = name
    try:
        await send_json(send, reply.status, orjson.dumps(out), served_lines(exchange, limits))
    finally:
        # Recorded once the answer is out: none of it is the client's wait, and the
        # upstream's answer counts even if the client has gone.
        exchange.close()


def _events(
    exchange: Streaming[ChunkStream, Sequence[Piece]],
    writer: BodyWriter | None,
    limits: bytes,
    heartbeats: Heartbeats,
    head_sent: bool = False,
) -> Response:
    body = _sse(exchange, writer, heartbeats)
    return event_stream(body, served_lines(exchange, limits), head_sent)


def _done(endpoint: Endpoint) -> bytes:
    """A stream's end marker: none for the Responses API, whose last event ends it."""
    return b"" if endpoint is Endpoint.RESPONSES else _DONE


def _error_event(body: dict[str, Any], done: bytes) -> bytes:
    """An error told in a stream whose head is out (a failure midway, the gateway
    stopping, or a failure before the answer began after an early head), then its end."""
    return b"data: " + orjson.dumps(body) + b"\n\n" + done


async def _sse(
    exchange: Streaming[ChunkStream, Sequence[Piece]],
    writer: BodyWriter | None,
    heartbeats: Heartbeats = NO_HEARTBEATS,
) -> AsyncIterator[bytes]:
    """The stream's events, one write per upstream read, ending with exactly one end
    marker whatever the upstream's end looked like: it rides on the last write when
    the upstream's end came with content, else goes alone (and after an error event).
    After the first write, a stream that can push its batches (`ChunkBatches`) writes
    them through the server's `writer` from the upstream socket's callback, with no
    task woken per event: long streams' cost per event (bench/README.md)."""
    upstream = exchange.result
    rid, name = exchange.job.response_id, exchange.model.name
    done = _done(exchange.job.endpoint)
    error: ProviderError | None = None
    gone = closed = False
    beat: Beat | None = None  # kept alive while its upstream is quiet (heartbeat.py)

    def take(batch: Sequence[Piece]) -> bytes:
        """A batch kept for the evaluator and encoded, with the end marker if it ends."""
        nonlocal done
        if beat is not None:
            beat.wrote = True
        exchange.observe(batch)
        out = _encode_batch(batch, rid, name)
        if upstream.complete:
            out, done = out + done, b""
        return out

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
        if done:
            yield done
    except (asyncio.CancelledError, GeneratorExit) as exc:
        cut = stopped_midway(exchange, exc)
        if cut is None:
            gone = True  # the client left (or uvicorn's own deadline): nobody to tell
            raise
        closed = True
        yield _error_event(error_body(cut.message, "server_error", ShuttingDown.code), done)
    except Exception as exc:  # after the first byte, the stream is all we can report on
        error = stream_failure(exchange, exc)
        closed = True
        await exchange.fail(error)  # a bench it began is stored before the client hears
        yield _error_event(error_body(error.message, "server_error", error.kind), done)
    finally:
        heartbeats.discard(beat)
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
        if not closed:
            exchange.close(error, client_gone=gone)


def _audio(exchange: Streaming[BinaryReply, bytes], limits: bytes = b"") -> Response:
    reply = exchange.result

    async def body() -> AsyncIterator[bytes]:
        gone = closed = False
        try:
            if exchange.first:
                yield exchange.first
            async for piece in exchange.rest:
                yield piece
        except (asyncio.CancelledError, GeneratorExit) as exc:
            if stopped(exc):  # the server's deadline: audio has no way to say so, it is cut
                closed = True
                exchange.close(_cut())
            gone = True
            raise
        except ProviderError as exc:
            closed = True
            await exchange.fail(exc)  # a bench it began is stored before the client hears
            raise  # the headers are out: the connection ends unfinished
        finally:
            with anyio.CancelScope(shield=True):
                await reply.aclose()
            if not closed:
                exchange.close(client_gone=gone)

    response = StreamingResponse(body(), media_type=reply.media_type)
    response.raw_headers += header_pairs(served_lines(exchange, limits))
    return response


class FastEndpoint:
    """An ASGI endpoint: Starlette routes call it as an app, the fast path directly."""

    def __init__(self, handle: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.handle(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await internal_error(scope["path"])(scope, receive, stamped(scope, send))


def fast_handlers(routes: list[Route]) -> dict[str, Callable[[Scope, Receive, Send], Any]]:
    """The POST endpoints that the app serves straight from a dict, ahead of Starlette's
    router and middleware: the proxy's own cost is the product (gateway/http/app.py)."""
    return {r.path: r.endpoint for r in routes if isinstance(r.endpoint, FastEndpoint)}


def _encode_batch(batch: Sequence[Piece], rid: str, model: str) -> bytes:
    """The events as the client reads them; a `RawChunk` is already."""
    if len(batch) == 1:
        piece = batch[0]
        return piece.sse if isinstance(piece, RawChunk) else _encode(piece, rid, model)
    return b"".join([p.sse if isinstance(p, RawChunk) else _encode(p, rid, model) for p in batch])


def _encode(chunk: Chunk, response_id: str, model: str) -> bytes:
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
