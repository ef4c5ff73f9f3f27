"""A prompt as a fixed-size vector, for learning which model answers which prompts well.

No vocabulary and no pretrained model: words, word pairs and character 4-grams are
hashed into a fixed number of buckets (the "hashing trick"), so the vector has the same
size whatever the traffic, and two processes (or two machines) map the same prompt to
the same vector. A few slots hold what hashing blurs: the prompt's length, its numbers,
and markers of code and of mathematics.

The text is the conversation's first and last user messages (the topic, and what is
asked now), each cut to `MAX_CHARS`, so that the cost per request is bounded whatever
the prompt's length: ~60-100 µs of CPU on a busy 2-core VM (bench/prompt_routing.py
--timing).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DENSE", "DIM", "Vector", "features", "prompt_text"]

Vector = npt.NDArray[np.float64]

DIM = 256  # the vector's size: a full covariance per model stays 512 KB (prompt_router)
DENSE = 12  # slots 0..DENSE-1: the bias and the hand-made markers; hashed buckets after
_BUCKETS = DIM - DENSE
MAX_CHARS = 2000  # of each message used: the cost per request is bounded

_TOKEN = re.compile(r"[a-z]+|0+|[^\sa-z0]")
_DIGITS = str.maketrans("123456789", "000000000")  # every digit 0: a number's shape stays
_CODE = ("```", "def ", "function", "class ", "#include", "import ", "=>", "()", "{", ";\n")
_MATH = re.compile("0\\s?[-+*/^\u00d7\u00f7=<>]\\s?0|\\\\frac|\\\\sqrt|\\$")  # x, /: U+00D7, U+00F7
_HALF = 1 / math.sqrt(2.0)  # words and 4-grams each make half the hashed part's norm
_MIX = np.uint32(0x9E3779B1)  # 2^32 / golden ratio
_PAIR = np.uint32(0x01000193)  # FNV's prime: combines two word hashes into a pair's
_GRAM = np.uint32(1_000_003)


def prompt_text(body: Mapping[str, Any]) -> tuple[str, int]:
    """The text to learn from in a request body of any of the text APIs (chat, messages,
    completions, responses), and the number of user turns in it; ("", 0) if none."""
    messages = body.get("messages")
    if isinstance(messages, list):
        users = [m for m in messages if _is_user(m)]  # only the first and last are read
        said = ((i, t) for i, m in enumerate(users) if (t := _text(m.get("content"))))
        i, first = next(said, (-1, ""))
        if not first:
            return "", 0
        j, last = next(
            ((j, t) for j, m in reversed(list(enumerate(users))) if (t := _text(m.get("content")))),
            (i, first),
        )
        if j == i:
            return first[:MAX_CHARS], len(users)
        return f"{first[:MAX_CHARS]}\n{last[:MAX_CHARS]}", len(users)
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return value[:MAX_CHARS], 1
        if isinstance(value, list):  # Responses input items, or a batch of prompts
            parts = [_text(v.get("content")) if isinstance(v, dict) else _text(v) for v in value]
            text = "\n".join(p for p in parts if p)
            return text[:MAX_CHARS], 1 if text else 0
    return "", 0


def _is_user(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "user"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: {"type": "text", "text": ...}
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def features(text: str, turns: int = 1) -> Vector:
    """The vector of one prompt: slot 0 the bias (always 1), then the markers, then
    hashed words, word pairs and character 4-grams, scaled to unit length.

    The markers are in units that span about 1 between a short and a long (or a plain
    and a marked) prompt: counts on a log2 scale with 16x per unit, fractions scaled up.
    A ridge regression's prior treats every unit alike, and a marker whose values all lie
    within a few hundredths (log-length over 0..4,000 characters did) is all but ignored:
    its effect cannot be told from the intercept's on a few hundred ratings."""
    x = np.zeros(DIM)
    x[0] = 1.0
    if not text:
        return x
    lower = text.lower().translate(_DIGITS)
    tokens = _TOKEN.findall(lower)
    numbers = [t for t in tokens if t[0] == "0"]
    n = len(text)
    x[1] = _clip(math.log2(n / 256) / 4)  # 0 at 256 characters, 1 at 4,096
    x[2] = _clip(math.log2(1 + len(numbers)) / 4)  # 1 at 15 numbers
    x[3] = _clip(5.0 * sum(map(len, numbers)) / n)  # digits among the characters
    x[4] = _clip(len(_MATH.findall(lower)) / 3.0)
    x[5] = _clip(sum(map(lower.count, _CODE)) / 3.0)
    x[6] = 1.0 if "?" in text else 0.0
    x[7] = _clip(math.log2(1 + text.count("\n")) / 4)  # 1 at 15 line breaks
    x[8] = _clip(math.log2(max(turns, 1)) / 2)  # 1 at the fourth user turn
    x[9] = _clip(4.0 * (len(text.encode()) - n) / n)  # bytes past ASCII: other scripts
    x[10] = _clip(4.0 * len(numbers) / max(len(tokens), 1))  # numbers among the tokens
    x[11] = 1.0 if any(t in _IMPERATIVE for t in tokens[:3]) else 0.0
    _hashed(x[DENSE:], tokens, lower)
    return x


# Openings of a task rather than a question ("write", "rewrite", "explain"...): generic
# English, not tuned to any data set.
_IMPERATIVE = frozenset(
    [
        "write",
        "rewrite",
        "compose",
        "draft",
        "create",
        "describe",
        "explain",
        "summarize",
        "summarise",
        "imagine",
        "pretend",
        "act",
        "suggest",
        "generate",
        "list",
        "edit",
        "translate",
        "give",
        "help",
    ]
)


def _clip(v: float) -> float:
    return -2.0 if v < -2.0 else 2.0 if v > 2.0 else v


def _hashed(out: Vector, tokens: list[str], lower: str) -> None:
    """Words with adjacent word pairs, and character 4-grams, counted in their buckets
    (each signed by another bit of its hash, so collisions cancel on average rather
    than add up); each of the two scaled to half the hashed part's (unit) length. Every
    digit is a 0 by now: a number's value says little about the kind of prompt, its
    length a little. One vectorised pass in 32-bit arithmetic that wraps, as hashing
    wants."""
    crc = zlib.crc32
    words = np.fromiter((crc(t.encode()) for t in tokens), dtype=np.uint32, count=len(tokens))
    pairs = words[:-1] * _PAIR + words[1:]
    code = np.frombuffer(lower.encode("utf-32-le"), dtype=np.uint32)
    grams = ((code[:-3] * _GRAM + code[1:-2]) * _GRAM + code[2:-1]) * _GRAM + code[3:]
    h = np.concatenate((words, pairs, grams)) * _MIX  # Fibonacci hashing: high bits mixed
    bucket = ((h >> np.uint32(8)) % np.uint32(_BUCKETS)).astype(np.intp)
    bucket[len(words) + len(pairs) :] += _BUCKETS  # 4-grams counted apart from words
    sign = np.where(h >> np.uint32(31), 1.0, -1.0)
    both = np.bincount(bucket, weights=sign, minlength=2 * _BUCKETS)
    for block in (both[:_BUCKETS], both[_BUCKETS:]):
        norm = math.sqrt(float(block @ block))
        if norm > 0:
            out += block * (_HALF / norm)
