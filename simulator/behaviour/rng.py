"""A numpy ``Generator`` whose scalar draws come from pre-drawn blocks.

The behaviour model draws one number at a time (a think time, a click); numpy's per-call
overhead is several times the cost of the draw, so scalar ``random``, ``normal``, ``lognormal``,
``exponential``, ``uniform`` and ``integers`` are served from blocks of 4096. Array draws go to
numpy unchanged. Same seed, same numbers; the distributions are numpy's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BLOCK = 4096

#: What counts as a scalar argument (a tuple: ``float | int`` in ``isinstance`` builds a union
#: object at every call).
_SCALAR = (float, int)


class BufferedGenerator(np.random.Generator):
    """``numpy.random.Generator`` with buffered scalar draws (a drop-in replacement)."""

    def __init__(self, seed: Any) -> None:
        super().__init__(np.random.PCG64(seed))
        self._uniform: list[float] = []
        self._normal: list[float] = []
        self._exponential: list[float] = []

    def _next_uniform(self) -> float:
        if not self._uniform:
            self._uniform = super().random(BLOCK).tolist()
        return self._uniform.pop()

    def _next_normal(self) -> float:
        if not self._normal:
            self._normal = super().standard_normal(BLOCK).tolist()
        return self._normal.pop()

    # The scalar draws pop their buffer themselves while it holds numbers (a Python call less
    # per draw than going through ``_next_uniform``; the network model draws one per call).

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if size is None and out is None:
            uniform = self._uniform
            return uniform.pop() if uniform else self._next_uniform()
        return super().random(size, dtype, out)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        if size is None and isinstance(loc, _SCALAR) and isinstance(scale, _SCALAR):
            return loc + scale * self._next_normal()
        return super().normal(loc, scale, size)

    def lognormal(self, mean: Any = 0.0, sigma: Any = 1.0, size: Any = None) -> Any:
        if size is None and isinstance(mean, _SCALAR) and isinstance(sigma, _SCALAR):
            normal = self._normal
            return math.exp(mean + sigma * (normal.pop() if normal else self._next_normal()))
        return super().lognormal(mean, sigma, size)

    def exponential(self, scale: Any = 1.0, size: Any = None) -> Any:
        if size is None and isinstance(scale, _SCALAR):
            if not self._exponential:
                self._exponential = super().standard_exponential(BLOCK).tolist()
            return scale * self._exponential.pop()
        return super().exponential(scale, size)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        if size is None and isinstance(low, _SCALAR) and isinstance(high, _SCALAR):
            uniform = self._uniform
            return low + (high - low) * (uniform.pop() if uniform else self._next_uniform())
        return super().uniform(low, high, size)

    def integers(  # type: ignore[override]
        self, low: Any, high: Any = None, size: Any = None, **kwargs: Any
    ) -> Any:
        if (
            size is None
            and not kwargs
            and isinstance(low, int)
            and (high is None or isinstance(high, int))
        ):
            start, stop = (0, low) if high is None else (low, high)
            if stop <= start:
                raise ValueError("high <= 0" if high is None else "low >= high")
            return start + min(int(self._next_uniform() * (stop - start)), stop - start - 1)
        return super().integers(low, high, size, **kwargs)


def buffered(seed: Any) -> BufferedGenerator:
    """A buffered generator from anything ``numpy.random.PCG64`` takes as a seed."""
    return BufferedGenerator(seed)
