"""Summary statistics of a tensor, reduced chunk by chunk so memory stays bounded.

Mean, std, min and max are taken over the finite values; NaN and Inf are counted apart, so one
bad value does not hide the shape of the rest of the distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorStats:
    count: int
    mean: float
    std: float
    min: float
    max: float
    zeros_fraction: float
    nan: int
    inf: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["count"]
        return data


class StatsAccumulator:
    """Merges per-chunk moments with Chan's parallel update (numerically stable)."""

    def __init__(self) -> None:
        self.count = 0  # elements seen, including NaN/Inf
        self.finite = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0
        self.nan = 0
        self.inf = 0

    def add(self, chunk: np.ndarray) -> None:
        values = _as_float(chunk).reshape(-1)
        n = values.size
        if n == 0:
            return
        self.count += n
        self.zeros += n - int(np.count_nonzero(values))
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            nan = int(np.count_nonzero(np.isnan(values)))
            self.nan += nan
            self.inf += int(np.count_nonzero(np.isinf(values)))
            values = values[np.isfinite(values)]
            n = values.size
            if n == 0:
                return
            low, high = float(values.min()), float(values.max())
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        chunk_mean = float(values.mean(dtype=np.float64))
        centred = values - values.dtype.type(chunk_mean)
        chunk_m2 = float(np.dot(centred, centred))
        total = self.finite + n
        delta = chunk_mean - self.mean
        self.mean += delta * n / total
        self.m2 += chunk_m2 + delta * delta * self.finite * n / total
        self.finite = total

    def result(self) -> TensorStats:
        if self.finite == 0:
            return TensorStats(
                self.count,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                self._zeros_fraction(),
                self.nan,
                self.inf,
            )
        std = math.sqrt(max(self.m2, 0.0) / self.finite)
        return TensorStats(
            self.count,
            self.mean,
            std,
            self.min,
            self.max,
            self._zeros_fraction(),
            self.nan,
            self.inf,
        )

    def _zeros_fraction(self) -> float:
        return self.zeros / self.count if self.count else 0.0


def _as_float(chunk: np.ndarray) -> np.ndarray:
    if chunk.dtype.kind == "f" and chunk.dtype.itemsize >= 4:
        return chunk
    if chunk.dtype.kind == "f":  # float16: reduce in float32
        return chunk.astype(np.float32)
    return chunk.astype(np.float64)


def compute_stats(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over all elements of all ``chunks``."""
    acc = StatsAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()
