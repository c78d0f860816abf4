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


def test_a_nan_anywhere_in_the_resamples_leaves_the_verdict_undefined():
    # sorted() puts NaN anywhere, so the interval's ends could be finite and say "better"
    from finjust.eval.scorecard import LOSS_METRICS

    base = [(1.0, 10)] * 20
    for position in range(0, 20, 5):
        tuned = list(base)
        tuned[position] = (float("nan"), 10)
        for seed in range(10):
            result = paired_bootstrap(base, tuned, LOSS_METRICS["test_loss"], higher_is_better=False, samples=200,
                                      seed=seed)  # fmt: skip
            assert result.verdict == "undefined (a score is NaN)"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_a_handful_of_improved_examples_is_not_called_better(n):
    result = paired_bootstrap([0.0] * n, [1.0] * n, mean)
    assert result.delta_ci == (1.0, 1.0)  # the bootstrap alone would say "better"
    assert result.verdict == "no significant change" and result.sign_test_p == pytest.approx(2 / 2**n if n > 1 else 1.0)


def test_the_sign_test_is_exact_and_two_sided():
    from finjust.eval.bootstrap import sign_test

    assert sign_test(0, 0) == 1.0 and sign_test(6, 0) == sign_test(0, 6) == 2 / 64
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert paired_bootstrap([0.0] * 6, [1.0] * 6, mean).verdict == "better"  # p = 0.031


def test_a_mean_carried_by_a_few_examples_against_most_is_no_change():
    # four examples gain a lot, sixteen lose a little: the interval excludes zero upwards, while
    # the sign test finds a significant majority going down
    base, tuned = [0.0] * 4 + [0.5] * 16, [1.0] * 4 + [0.49] * 16
    result = paired_bootstrap(base, tuned, mean)
    assert result.delta_ci[0] > 0 and result.sign_test_p < 0.05
    assert result.verdict == "no significant change"


def test_both_ends_of_an_interval_are_read_alike():
    # the low end was rounded down and the high one to nearest: 1,000 values gave ranks 24 and 974
    from finjust.eval.bootstrap import _percentiles

    low, high = _percentiles([float(v) for v in range(1000)], 0.95)
    assert low == pytest.approx(999 - high)
