"""The mock's binary and vector answers: images, audio, video jobs and embeddings.

The payloads are built once at import; embedding vectors are cached by a digest of
their input, so repeated benchmark traffic costs a dictionary lookup.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import sys
import zlib
from array import array
from functools import lru_cache
from typing import Any

from providers.errors import BadRequest

__all__ = [
    "PNG",
    "PNG_B64",
    "WAV",
    "WAV_SECONDS",
    "bad_request",
    "embeddings_body",
    "images_body",
    "speech",
    "video_job",
]


def bad_request(message: str, param: str) -> BadRequest:
    return BadRequest(message, status=400, param=param)


def _png() -> bytes:
    """A valid 1x1 grey RGBA PNG."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80\x80\x80\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


_RATE = 24_000  # OpenAI's speech: 24 kHz, 16-bit, mono


def _pcm(seconds: float, rate: int = _RATE) -> bytes:
    """Silence as OpenAI's `pcm` format sends it: raw 16-bit little-endian mono samples."""
    return bytes(round(seconds * rate) * 2)


def _wav(seconds: float, rate: int = _RATE) -> bytes:
    """A valid silent 16-bit mono PCM WAV file."""
    data = _pcm(seconds, rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# An MPEG-1 Layer III frame header: no CRC, 32 kbit/s, 48 kHz, no padding, mono. With
# its side information all zero (no main data) the frame decodes as 1,152 samples of
# silence; 144 * 32000 / 48000 = 96 bytes a frame.
_MP3_FRAME = b"\xff\xfb\x14\xc0" + bytes(92)
_MP3_FRAME_SECONDS = 1152 / 48_000


PNG = _png()
PNG_B64 = base64.b64encode(PNG).decode("ascii")
WAV_SECONDS = 0.1
WAV = _wav(WAV_SECONDS)
_MP3_FRAMES = round(WAV_SECONDS / _MP3_FRAME_SECONDS)
# Each speech format: the bytes sent, their content type and their length in seconds.
# mp3, wav and pcm are real (silent) audio in the format named; the mock has no Opus,
# AAC or FLAC encoder, so it sends its WAV for those and says so in the content type
# rather than label WAV bytes as something they are not.
_SPEECH: dict[str, tuple[bytes, str, float]] = {
    "mp3": (_MP3_FRAME * _MP3_FRAMES, "audio/mpeg", _MP3_FRAMES * _MP3_FRAME_SECONDS),
    "wav": (WAV, "audio/wav", WAV_SECONDS),
    "pcm": (_pcm(WAV_SECONDS), "audio/pcm", WAV_SECONDS),
}


def speech(response_format: object) -> tuple[bytes, str, float]:
    """The audio for a speech request: its bytes, their content type and duration."""
    if response_format is None:
        response_format = "mp3"  # OpenAI's default
    return _SPEECH.get(response_format if isinstance(response_format, str) else "", _SPEECH["wav"])


def _embedding_inputs(value: Any) -> list[str | tuple[int, ...]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [tuple(value)]
        if all(isinstance(item, str) for item in value):
            return value
        if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
            return [tuple(item) for item in value]
    raise bad_request(
        "'input' must be a string, a list of strings, or a list of token ids (or of such lists)",
        "input",
    )


def _digest(key: str | tuple[int, ...]) -> bytes:
    data = key.encode() if isinstance(key, str) else b"\x00" + ",".join(map(str, key)).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


@lru_cache(maxsize=4096)
def _vector(digest: bytes, dims: int) -> array[float]:
    rng = random.Random(int.from_bytes(digest, "little"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values])


@lru_cache(maxsize=4096)
def _vector_b64(digest: bytes, dims: int) -> str:
    vector = _vector(digest, dims)
    if sys.byteorder != "little":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


def embeddings_body(body: dict[str, Any], model: str, prompt_tokens: int) -> dict[str, Any]:
    dims = body.get("dimensions", 16)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192:
        raise bad_request("'dimensions' must be an integer between 1 and 8192", "dimensions")
    encode = body.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _vector_b64(digest, dims) if encode else _vector(digest, dims).tolist(),
        }
        for index, digest in enumerate(map(_digest, _embedding_inputs(body.get("input"))))
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def images_body(body: dict[str, Any], created: int, stem: str) -> dict[str, Any]:
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise bad_request("'n' must be an integer between 1 and 10", "n")
    if body.get("response_format") == "url":
        data = [{"url": f"https://mock.invalid/images/{stem}-{i}.png"} for i in range(n)]
    else:
        data = [{"b64_json": PNG_B64} for _ in range(n)]
    return {"created": created, "data": data}


def video_job(video_id: str, created: int, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": video_id,
        "object": "video",
        "model": model,
        "status": "queued",
        "progress": 0,
        "created_at": created,
        "seconds": str(body.get("seconds") or "4"),
        "size": str(body.get("size") or "720x1280"),
        "prompt": body.get("prompt"),
        "completed_at": None,
        "expires_at": None,
        "error": None,
        "remixed_from_video_id": None,
    }
