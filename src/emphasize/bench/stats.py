"""The statistics every report uses: means with 95% percentile bootstrap CIs over prompts, and paired differences.

One implementation, used by every benchmark that prints a CI: resampling units are prompts (a prompt's seeds are
averaged first), 2000 resamples, a fixed seed, so the same rows always give the same interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000  # bootstrap resamples
BOOTSTRAP_SEED = 0  # seed of the resampling generator


@dataclass(frozen=True)
class Estimate:
    """A mean over n units with its 95% bootstrap CI."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return dict(mean=self.mean, low=self.low, high=self.high, n=self.n)


def bootstrap_ci(values, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of `values` (NaN, NaN when empty).

    Args:
        values: one value per resampling unit (prompt).
        resamples: bootstrap resamples.
        seed: seed of the resampling generator.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def estimate(values) -> Estimate:
    """Mean and bootstrap CI of one value per unit."""
    values = np.asarray(list(values), dtype=np.float64)
    if len(values) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    return Estimate(float(values.mean()), *bootstrap_ci(values), len(values))


def per_unit(pairs: Iterable[tuple[object, float | None]]) -> dict[object, float]:
    """Unit -> mean of its non-None values (units whose values are all None are left out)."""
    by_unit: dict[object, list[float]] = {}
    for unit, value in pairs:
        if value is not None:
            by_unit.setdefault(unit, []).append(float(value))
    return {k: float(np.mean(v)) for k, v in by_unit.items()}


def paired_difference(a: Mapping[object, float], b: Mapping[object, float]) -> Estimate:
    """Mean and CI of a[u] - b[u] over the units both define.

    Args:
        a, b: unit -> value (e.g. prompt -> seed-averaged metric of a method and of plain).
    """
    shared = sorted(set(a) & set(b), key=str)
    return estimate([a[u] - b[u] for u in shared])
