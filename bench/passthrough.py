"""The minimal pass-through proxy: what Starlette + uvicorn + aiohttp can do at best.

Usage: python bench/passthrough.py UPSTREAM_BASE PORT   (e.g. http://127.0.0.1:8999 8081)
Forwards every POST body verbatim to UPSTREAM_BASE + path; streams SSE back.
PASSTHROUGH_POOL: upstream connections at most (default 256; 0: no limit, for
bench/streams.py, where each open stream holds one).
"""

import contextlib
import os
import sys

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1].rstrip("/")
pool: dict[str, aiohttp.ClientSession] = {}


@contextlib.asynccontextmanager
async def lifespan(app):
    limit = int(os.environ.get("PASSTHROUGH_POOL", "256"))
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as s:
        pool["s"] = s
        yield


async def forward(request: Request) -> Response:
    headers = {"content-type": "application/json"}
    body = await request.body()
    resp = await pool["s"].post(UPSTREAM + request.url.path, data=body, headers=headers)
    kind = resp.headers.get("content-type", "application/json")
    if not kind.startswith("text/event-stream"):
        data = await resp.read()
        return Response(data, resp.status, media_type=kind)

    async def chunks():
        async with resp:
            async for chunk in resp.content.iter_any():
                yield chunk

    return StreamingResponse(chunks(), resp.status, media_type=kind)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[Route("/healthz", healthz), Route("/{path:path}", forward, methods=["POST"])],
    lifespan=lifespan,
)

if __name__ == "__main__":
    port = int(sys.argv[2])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip
