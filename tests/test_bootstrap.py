"""The paired bootstrap: intervals cover the truth, verdicts follow the evidence."""

from __future__ import annotations

import random

import pytest

from finjust.eval.bootstrap import paired_bootstrap


def mean(items):
    return sum(items) / len(items)


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
    # 100 synthetic test sets of 60 Bernoulli(0.4) answers: a 95% interval should cover 0.4
    # in about 95 of them; a binomial 99.9% band for 100 trials is 86..100
    rng = random.Random(1)
    covered = 0
    for trial in range(100):
        items = [float(rng.random() < 0.4) for _ in range(60)]
        result = paired_bootstrap(items, items, mean, samples=400, seed=trial)
        covered += result.base_ci[0] <= 0.4 <= result.base_ci[1]
    assert covered >= 86


def test_a_clear_improvement_is_better_and_noise_is_no_change():
    rng = random.Random(2)
    base = [float(rng.random() < 0.2) for _ in range(80)]
    tuned = [float(rng.random() < 0.8) for _ in range(80)]
    assert paired_bootstrap(base, tuned, mean).verdict == "better"
    assert paired_bootstrap(tuned, base, mean).verdict == "worse"
    same = [float(rng.random() < 0.5) for _ in range(80)]
    shuffled = same[1:] + same[:1]
    assert paired_bootstrap(same, shuffled, mean).verdict == "no significant change"


def test_lower_is_better_flips_the_verdict():
    base, tuned = [3.0] * 20 + [3.5] * 20, [1.0] * 20 + [1.5] * 20
    assert paired_bootstrap(base, tuned, mean, higher_is_better=False).verdict == "better"


def test_point_values_and_delta():
    result = paired_bootstrap([0.0, 1.0], [1.0, 1.0], mean, samples=50)
    assert (result.base, result.tuned, result.delta) == (0.5, 1.0, 0.5)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [], mean)


def test_a_nan_score_has_no_verdict_rather_than_no_change():
    # a diverged run's test loss is NaN: every comparison with NaN is False, which read as "no change"
    result = paired_bootstrap([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], mean, higher_is_better=False, samples=50)
    assert result.verdict == "undefined (a score is NaN)"
