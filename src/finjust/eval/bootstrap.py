"""Paired bootstrap confidence intervals and a verdict for base vs tuned on one test set.

Both models answered the same test examples, so the examples are resampled together
(a paired bootstrap, Efron & Tibshirani 1993, ch. 16). A verdict of better or worse needs
the percentile interval of the tuned-minus-base difference to exclude zero *and* an exact
two-sided sign test over the examples whose own score changed to agree (p below 1 -
confidence, the majority in the interval's direction). The percentile bootstrap alone is
too eager on few examples: it called one to five improved examples out of five "better"
(interval [1, 1]; the sign test's p is 1.0 to 0.0625), and under no true change it found a
difference 13% of the time with 4 changed examples of 10 (nominal 5%).

Written here because the statistics libraries that have a bootstrap (SciPy's) do not
aggregate arbitrary per-example items such as the label pairs of macro-F1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy

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
    #: exact two-sided sign test over the examples whose score changed (1.0 when none did)
    sign_test_p: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(values: list[float], confidence: float) -> tuple[float, float]:
    """The interval's ends: both tails' percentiles, interpolated alike (numpy's linear rule)."""
    tail = (1 - confidence) / 2
    low, high = numpy.quantile(values, (tail, 1 - tail))
    return float(low), float(high)


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
    ups, downs = _changed(base_items, tuned_items, aggregate)
    p = sign_test(ups, downs)
    nan = any(math.isnan(value) for value in (base, tuned, *deltas))  # sorted() orders NaN arbitrarily
    return Comparison(
        base, tuned, _percentiles(base_stats, confidence), _percentiles(tuned_stats, confidence), tuned - base,
        delta_ci, _verdict(delta_ci, higher_is_better, nan, (ups, downs), p < 1 - confidence), p,
    )  # fmt: skip


def _changed(base_items: Sequence[Any], tuned_items: Sequence[Any], aggregate: Aggregate) -> tuple[int, int]:
    """How many examples scored higher with the tuned model, and how many lower (each alone)."""
    ups = downs = 0
    for base_item, tuned_item in zip(base_items, tuned_items, strict=True):
        difference = aggregate([tuned_item]) - aggregate([base_item])
        ups, downs = ups + (difference > 0), downs + (difference < 0)
    return ups, downs


def fewest_for_a_verdict(confidence: float) -> int:
    """The fewest changed examples whose sign test can agree at ``confidence``: all moving one
    way (6 at 95%). Fewer test examples than that can give no verdict but "no significant change"."""
    n = 1
    while sign_test(n, 0) >= 1 - confidence:
        n += 1
    return n


def sign_test(ups: int, downs: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven if each changed
    example were as likely to go either way."""
    n = ups + downs
    tail = sum(math.comb(n, k) for k in range(min(ups, downs) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _verdict(delta_ci: tuple[float, float], higher_is_better: bool, nan: bool, changed: tuple[int, int],
             sign_test_agrees: bool) -> str:  # fmt: skip
    low, high = delta_ci
    if nan:  # a diverged model's NaN loss is not "no change"
        return "undefined (a score is NaN)"
    ups, downs = changed
    if (low > 0 and ups > downs or high < 0 and downs > ups) and sign_test_agrees:
        improved = (low > 0) == higher_is_better
        return "better" if improved else "worse"
    return "no significant change"
