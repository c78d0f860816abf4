"""Paired bootstrap confidence intervals and a verdict for base vs tuned on one test set.

Both models answered the same test examples, so the examples are resampled together
(a paired bootstrap, Efron & Tibshirani 1993, ch. 16); the percentile interval of the
tuned-minus-base difference decides the verdict. Written here because the statistics
libraries that have it (SciPy's ``bootstrap``) do not aggregate arbitrary per-example
items such as the label pairs of macro-F1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Aggregate = Callable[[Sequence[Any]], float]


@dataclass(frozen=True)
class Comparison:
    """Point values, 95% (or other) intervals and the verdict for one metric."""

    base: float
    tuned: float
    base_ci: tuple[float, float]
    tuned_ci: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    verdict: str  # "better", "worse", "no significant change" or "undefined (a score is NaN)"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(values: list[float], confidence: float) -> tuple[float, float]:
    values = sorted(values)
    tail = (1 - confidence) / 2
    low = values[int(tail * (len(values) - 1))]
    high = values[int(round((1 - tail) * (len(values) - 1)))]
    return low, high


def paired_bootstrap(
    base_items: Sequence[Any],
    tuned_items: Sequence[Any],
    aggregate: Aggregate,
    higher_is_better: bool = True,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Resample example indices ``samples`` times; intervals are percentiles of the aggregates."""
    if len(base_items) != len(tuned_items) or not base_items:
        raise ValueError("paired bootstrap needs the same, non-zero number of items for both models")
    rng = random.Random(seed)
    n = len(base_items)
    base_stats, tuned_stats, deltas = [], [], []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        b, t = aggregate([base_items[i] for i in idx]), aggregate([tuned_items[i] for i in idx])
        base_stats.append(b)
        tuned_stats.append(t)
        deltas.append(t - b)
    base, tuned = aggregate(base_items), aggregate(tuned_items)
    delta_ci = _percentiles(deltas, confidence)
    return Comparison(
        base, tuned, _percentiles(base_stats, confidence), _percentiles(tuned_stats, confidence),
        tuned - base, delta_ci, _verdict(delta_ci, higher_is_better),
    )  # fmt: skip


def _verdict(delta_ci: tuple[float, float], higher_is_better: bool) -> str:
    low, high = delta_ci
    if math.isnan(low) or math.isnan(high):  # a diverged model's NaN loss is not "no change"
        return "undefined (a score is NaN)"
    if low > 0 or high < 0:
        improved = (low > 0) == higher_is_better
        return "better" if improved else "worse"
    return "no significant change"
