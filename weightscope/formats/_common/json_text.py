"""JSON texts from model files (Keras configs, safetensors headers), parsed within limits."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from weightscope.limits import Limits

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = np.zeros(256, np.int8)
_OPENING[list(b"[{")] = 1
_OPENING[list(b"]}")] = -1
_CHUNK = 1 << 20


def nesting_depth(text: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, counted without parsing it (strings are
    cut out, then brackets counted, a chunk at a time: memory stays bounded)."""
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), _CHUNK):
        count = min(_CHUNK, len(brackets) - start)
        steps = _OPENING[np.frombuffer(brackets, np.uint8, count, start)]
        running = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(running.max()))
        level = int(running[-1])
    return deepest


def load_json(
    text: bytes | str, limits: Limits, what: str, size_limit: str = "max_json_bytes"
) -> Any:
    """``json.loads(text)`` once its size (against the limit ``size_limit``) and nesting are
    within ``limits`` (``what`` names the text in messages: ``config.json``). Raises
    ``LimitExceeded``, or ``ValueError`` for text that is not JSON."""
    data = text.encode("utf8", "surrogatepass") if isinstance(text, str) else text
    limits.check(size_limit, len(data), f"{what} holds {len(data):,} bytes")
    depth = nesting_depth(data)
    limits.check("max_json_depth", depth, f"{what} nests arrays and objects {depth:,} deep")
    try:
        return json.loads(data)
    except RecursionError:  # a raised max_json_depth, past what Python's parser can take
        raise ValueError(
            f"nested {depth:,} deep: deeper than Python's JSON parser can read"
        ) from None
