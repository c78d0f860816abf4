"""The training benchmark's report: the ratios and gaps the README's claims are read from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "train_speed.py"


@pytest.fixture(scope="module")
def train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(tokens_per_second: float, peak: float, losses: list[float], allocator: str = "glibc") -> dict:
    return {"real_tokens_per_second": tokens_per_second, "peak_rss_gb": peak, "losses": losses,
            "seconds_per_step": 1.0, "first_step_seconds": 1.0, "final_loss": losses[-1],
            "allocator": allocator}  # fmt: skip


def test_ratios_memory_shares_and_loss_gaps(train_speed):
    results = {
        "a": _result(100.0, 4.0, [3.0, 2.0]),
        "b": _result(200.0, 3.0, [3.0, 2.5]),
        "finjust": _result(300.0, 1.5, [3.5, 2.5]),
        "finjust-compiled": _result(400.0, 1.8, [3.0, 2.0]),
    }
    report = train_speed._report(results, peak=1000.0)
    assert report["finjust_over_a"] == 3.0 and report["finjust_over_b"] == 1.5
    assert report["compiled_over_a"] == 4.0 and report["compiled_over_b"] == 2.0
    assert report["peak_rss_of_b"]["finjust"] == 0.5
    assert report["peak_rss_of_b"]["finjust-compiled"] == pytest.approx(0.6)
    assert results["finjust"]["loss_gap_to_b"] == 0.25  # mean of |3.5 - 3.0| and |2.5 - 2.5|
    assert results["b"]["loss_gap_to_b"] == 0.0
    mfu = 300.0 * train_speed.flops_per_token() / 1e12
    assert results["finjust"]["mfu"] == pytest.approx(mfu)
    table = train_speed._table(report)
    assert "finjust/A 3.00x" in table and "peak memory of B's: finjust 50%, compiled 60%" in table
    assert report["finjust_over_b_malloc"] is None and "same allocator" not in table


def test_b_in_finjust_s_allocator_gets_its_own_ratio(train_speed):
    results = {
        "a": _result(100.0, 4.0, [3.0]),
        "b": _result(200.0, 3.0, [3.0]),
        "b-malloc": _result(240.0, 2.8, [3.0], "tcmalloc"),
        "finjust": _result(360.0, 1.5, [3.0], "tcmalloc"),
        "finjust-compiled": _result(480.0, 1.8, [3.0], "tcmalloc"),
    }
    report = train_speed._report(results, peak=1000.0)
    assert report["finjust_over_b"] == 1.8 and report["finjust_over_b_malloc"] == 1.5
    table = train_speed._table(report)
    assert "in the same allocator: finjust/B 1.50x" in table
    assert table.splitlines()[3].endswith("tcmalloc")  # the b-malloc row says what it ran in


def test_flops_per_token_counts_forward_and_input_gradients_of_the_frozen_weights(train_speed):
    # SmolLM2-135M: 30 layers of 3.54M weights and a 576 x 49,152 head, 4 FLOPs each per token
    assert train_speed.flops_per_token() == 4 * (30 * 3_538_944 + 576 * 49_152)
