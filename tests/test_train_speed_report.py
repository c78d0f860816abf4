"""The training benchmark's report: the ratios and gaps the README's claims are read from."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "train_speed.py"


@pytest.fixture(scope="module")
def train_speed():
    sys.path.insert(0, str(BENCHMARK.parent))  # as running the script does: it imports benchmarks/common.py
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_speed"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["train_speed"], sys.modules["common"]  # benchmarks/ holds other modules' names too
    sys.path.remove(str(BENCHMARK.parent))


def _result(tokens_per_second: float, peak: float, losses: list[float], allocator: str = "glibc") -> dict:
    return {"real_tokens_per_second": tokens_per_second, "model_flops_per_second": tokens_per_second * 1e9,
            "peak_rss_gb": peak, "losses": losses,
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
    assert results["finjust"]["mfu"] == pytest.approx(0.3)  # 300 GFLOP/s of a 1,000 GFLOP/s peak
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


def test_flops_per_token_counts_the_frozen_weights_4_times_and_the_adapters_6_times(train_speed):
    # SmolLM2-135M: 30 layers of 3.54M weights and a 576 x 49,152 head, forward and input gradient;
    # r=16 adapters, 162,816 weights a layer, also a weight gradient
    assert train_speed.flops_per_token() == 4 * (30 * 3_538_944 + 576 * 49_152) + 6 * 30 * 162_816


def test_attention_flops_count_each_token_s_causal_context(train_speed):
    # 3 tokens see 1 + 2 + 3 keys; 12 x hidden FLOPs a key and layer (scores and values, forward and backward)
    assert train_speed.attention_flops(3) == 6 * 12 * 576 * 30
    assert train_speed.attention_flops(2 * 64) > 3.9 * train_speed.attention_flops(64)  # quadratic


def test_summary_counts_only_the_timed_steps(train_speed):
    bench = train_speed.Bench(steps=2, warmup=1)
    summary = train_speed._summary([9.0, 1.0, 1.0], [[5], [2, 3], [4, 4]], [3.0, 2.0, 1.0], bench)
    assert summary["real_tokens"] == 13 and summary["real_tokens_per_second"] == 6.5
    expected = (train_speed.step_flops([2, 3]) + train_speed.step_flops([4, 4])) / 2.0
    assert summary["model_flops_per_second"] == pytest.approx(expected)
    attention = train_speed.attention_flops(2) + train_speed.attention_flops(3)
    assert train_speed.step_flops([2, 3]) == 5 * train_speed.flops_per_token() + attention


def test_a_variant_s_peak_memory_is_its_own_not_the_parent_s(train_speed):
    """A child started by vfork and exec inherits its parent's peak in getrusage's ru_maxrss:
    every finjust variant once read the benchmark parent's 1.67 GB peak as its own."""
    parent_peak = bytearray(800 * 2**20)  # touched: resident in this process, the child's parent
    parent_peak[:: 4096] = b"x" * len(parent_peak[:: 4096])
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import train_speed; "
            "print(train_speed._summary([1.0], [[4]], [1.0], train_speed.Bench(steps=1, warmup=0))['peak_rss_gb'])")
    done = subprocess.run([sys.executable, "-c", code, str(BENCHMARK.parent)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    del parent_peak
    assert 0.0 < float(done.stdout) < 0.5


def test_rounds_report_each_variant_s_median_run(train_speed, monkeypatch):
    speeds = iter([100.0, 200.0, 300.0, 90.0, 250.0, 310.0, 110.0, 150.0, 900.0])  # a, b, finjust per round
    monkeypatch.setattr(train_speed, "_child", lambda variant, bench: {
        **_result(next(speeds), 1.0, [3.0]), "variant": variant})  # fmt: skip
    peaks = iter([1000.0, 800.0, 1200.0])
    monkeypatch.setattr(train_speed, "matmul_peak", lambda device: next(peaks))
    results, peak, failed = train_speed._measure(3, train_speed.Bench(steps=1, warmup=0), ["a", "b", "finjust"])
    assert peak == 1000.0 and failed == {}
    assert {name: r["real_tokens_per_second"] for name, r in results.items()} == {"a": 100.0, "b": 200.0, "finjust": 310.0}
    assert results["finjust"]["round_tokens_per_second"] == [300.0, 310.0, 900.0]
    results["a"]["losses"] = results["b"]["losses"] = results["finjust"]["losses"] = [3.0]
    table = train_speed._table({**train_speed._report({**results, "finjust-compiled": results["finjust"]}, peak)})
    assert "which ran at (tokens/s): a 100/90/110; b 200/250/150; finjust 300/310/900" in table


def test_an_even_count_of_rounds_reports_the_slower_middle_run(train_speed):
    runs = [_result(speed, 1.0, [3.0]) for speed in (400.0, 100.0, 300.0, 200.0)]
    assert train_speed._median_run(runs)["real_tokens_per_second"] == 200.0


def test_the_table_names_the_machine_it_ran_on(train_speed):
    results = {name: _result(100.0, 1.0, [3.0]) for name in ("a", "b", "finjust", "finjust-compiled")}
    machine = {"cpu": "AMD EPYC", "threads": 2, "bf16_unit": "AVX512-BF16", "fp32_matmul_peak_gflops": 185.4}
    table = train_speed._table({**train_speed._report(results, 1000.0), "machine": machine})
    assert table.splitlines()[0] == "machine: AMD EPYC, 2 threads, bf16 by AVX512-BF16, fp32 matmul peak 185 GFLOP/s"
    described = train_speed.describe_machine()
    assert described["threads"] >= 1 and described["fp32_matmul_peak_gflops"] > 0 and described["cpu"]


def test_a_failed_optional_variant_is_reported_and_a_required_one_stops_the_run(train_speed, monkeypatch):
    def child(variant, bench):
        if variant in ("finjust-compiled", "b"):
            raise train_speed.VariantFailed("exit 1: no compiler")
        return {**_result(100.0, 1.0, [3.0]), "variant": variant}

    monkeypatch.setattr(train_speed, "_child", child)
    monkeypatch.setattr(train_speed, "matmul_peak", lambda device: 1000.0)
    bench = train_speed.Bench(steps=1, warmup=0)
    results, _, failed = train_speed._measure(1, bench, ["a", "finjust", "finjust-compiled"])
    assert list(results) == ["a", "finjust"] and failed == {"finjust-compiled": "exit 1: no compiler"}
    with pytest.raises(train_speed.VariantFailed):
        train_speed._measure(1, bench, ["a", "b", "finjust"])


def test_a_required_variant_failing_in_a_later_round_keeps_the_rounds_before(train_speed, monkeypatch):
    calls = iter(range(100))

    def child(variant, bench):
        call = next(calls)
        if call == 7:  # round 3's b, after its a
            raise train_speed.VariantFailed("exit 137: killed")
        return {**_result(100.0 + call, 1.0, [3.0]), "variant": variant}

    monkeypatch.setattr(train_speed, "_child", child)
    monkeypatch.setattr(train_speed, "matmul_peak", lambda device: 1000.0)
    results, peak, failed = train_speed._measure(3, train_speed.Bench(steps=1, warmup=0), ["a", "b", "finjust"])
    assert failed == {"b in round 3": "exit 137: killed; reporting rounds 1-2"} and peak == 1000.0
    # round 3's a (call 6) is left out: every variant's median comes from rounds 1 and 2
    assert {name: r["round_tokens_per_second"] for name, r in results.items()} == {
        "a": [100.0, 103.0], "b": [101.0, 104.0], "finjust": [102.0, 105.0]}


def test_on_a_gpu_the_memory_compared_is_the_gpu_s(train_speed):
    results = {name: _result(100.0, 5.0, [3.0]) for name in ("a", "b", "finjust")}
    for name, gpu in (("a", 4.0), ("b", 2.0), ("finjust", 1.0)):
        results[name]["peak_gpu_gb"] = gpu
    report = {**train_speed._report(results, 1000.0), "failed": {"finjust-sdpa": "exit 1: boom"}}
    assert report["peak_memory_of_b"]["finjust"] == 0.5 and report["peak_rss_of_b"]["finjust"] == 1.0
    table = train_speed._table(report)
    assert "peak GPU memory of B's: finjust 50%" in table and "compiled" not in table
    assert table.splitlines()[3].split()[4] == "1.00"  # finjust's peak GB column: the GPU's
    assert table.splitlines()[-1] == "finjust-sdpa failed: exit 1: boom"


def test_variants_are_checked_and_a_child_gets_the_same_bench(train_speed):
    assert train_speed._variant_list("a, b,finjust,finjust-sdpa") == ["a", "b", "finjust", "finjust-sdpa"]
    for bad in ("a,b,finjust,fast", "a,finjust"):
        with pytest.raises(Exception, match="unknown|need a, b and finjust"):
            train_speed._variant_list(bad)
    bench = train_speed.Bench(steps=3, warmup=1, device="cuda", model="/models/shape")
    arguments = bench.arguments()
    assert [arguments[arguments.index(f"--{key}") + 1] for key in ("steps", "warmup", "device", "model")] == [
        "3", "1", "cuda", "/models/shape"]  # fmt: skip


def test_a_model_of_other_shapes_is_refused_as_its_flops_would_be_miscounted(train_speed, tiny_model_dir):
    problem = train_speed._shape_problem(str(tiny_model_dir))
    assert problem is not None and "(16, 2, 32, 8, " in problem and "not SmolLM2-135M's (576, 30, 1536, 192, 49152)" in problem
