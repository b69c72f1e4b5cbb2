"""JSON texts from model files (Keras configs, safetensors headers), parsed within limits."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from weightscope.limits import Limits

_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_STEPS = np.zeros(256, np.int8)
_STEPS[list(b"[{")] = 1
_STEPS[list(b"]}")] = -1
_CHUNK = 1 << 20


def nesting_depth(text: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, counted without parsing it: brackets
    count outside strings only. A quote delimits a string when an even number of backslashes
    precede it (an odd number escapes it). One vectorised pass, a chunk at a time, carrying the
    string parity, the parity of a closing run of backslashes and the depth from chunk to
    chunk: linear time and bounded memory, whatever the text (an unterminated string of ``\\"``
    included). On valid JSON this is exactly the depth of its arrays and objects."""
    deepest = level = 0
    in_string = 0  # 1 while the text read so far has an odd number of delimiting quotes
    odd_run = 0  # 1 when the text read so far ends in an odd number of backslashes
    for start in range(0, len(text), _CHUNK):
        chunk = np.frombuffer(text, np.uint8, min(_CHUNK, len(text) - start), start)
        # Where the last byte that is not a backslash lies, at or before each byte (-1 - odd_run
        # while the chunk holds none yet): the backslashes before a quote are the gap to it.
        index = np.arange(chunk.size, dtype=np.int32)
        last_other = np.where(chunk == _BACKSLASH, np.int32(-1 - odd_run), index)
        np.maximum.accumulate(last_other, out=last_other)
        quotes = np.flatnonzero(chunk == _QUOTE).astype(np.int32)
        before = np.where(quotes > 0, last_other[quotes - 1], -1 - odd_run)
        delimiters = quotes[(quotes - 1 - before) % 2 == 0]
        toggles = np.zeros(chunk.size, np.int32)
        toggles[delimiters] = 1
        inside = (np.cumsum(toggles, out=toggles) + in_string) & 1
        steps = _STEPS[chunk]
        counted = np.flatnonzero((steps != 0) & (inside == 0))
        if counted.size:
            running = np.cumsum(steps[counted], dtype=np.int64) + level
            deepest = max(deepest, int(running.max()))
            level = int(running[-1])
        in_string = int(inside[-1])
        odd_run = (chunk.size - 1 - int(last_other[-1])) % 2
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
