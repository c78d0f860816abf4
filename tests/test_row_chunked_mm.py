"""Row-chunked matmuls: the one-call result, and each problem shape timed once."""

from __future__ import annotations

import json

import pytest
import torch

from finjust.models import machine_plans
from finjust.models import row_chunked_mm as chunking


@pytest.fixture
def chunks_of_5(monkeypatch):
    monkeypatch.setattr(chunking, "chunk_rows_for", lambda a, b: 5)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_rows_give_the_one_call_result(chunks_of_5, transposed, with_bias):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(17, 6, generator=gen)  # 17 rows: three chunks of 5 and one of 2
    b = torch.randn(4, 6, generator=gen).T if transposed else torch.randn(6, 4, generator=gen)
    bias = torch.randn(4, generator=gen) if with_bias else None
    expected = a @ b if bias is None else torch.addmm(bias, a, b)
    torch.testing.assert_close(chunking.chunked_mm(a, b, bias), expected)


def test_bf16_chunks_round_like_one_call(chunks_of_5):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(23, 64, generator=gen), torch.randn(64, 32, generator=gen)
    exact = a @ b
    chunked = chunking.chunked_mm(a.bfloat16(), b.bfloat16()).float()
    one_call = (a.bfloat16() @ b.bfloat16()).float()
    assert (chunked - exact).abs().max() <= 1.5 * (one_call - exact).abs().max() + 1e-2


@pytest.fixture
def fresh_plans(monkeypatch, tmp_path):
    """No plan in this process, and a plans file of the test's own."""
    monkeypatch.setattr(chunking, "_PLANS", {})
    monkeypatch.setattr(machine_plans, "plans_file", lambda: tmp_path / "cache" / "matmul-plans.json")
    return tmp_path / "cache" / "matmul-plans.json"


def _record_timings(monkeypatch, plan=8) -> list[tuple[int, ...]]:
    timed: list[tuple[int, ...]] = []
    monkeypatch.setattr(chunking, "_faster_plan", lambda a, b: timed.append(tuple(b.shape)) or plan)
    return timed


def test_each_problem_shape_is_timed_once(monkeypatch, fresh_plans):
    timed = _record_timings(monkeypatch)
    weight = torch.randn(3, 6)
    for rows in (10, 30, 50):  # the row count is not part of the shape's key
        assert chunking.chunk_rows_for(torch.randn(rows, 6), weight.T) == 8
    chunking.chunk_rows_for(torch.randn(10, 3), weight)  # the backward's problem: another shape
    assert timed == [(6, 3), (3, 6)]


def test_plans_are_kept_for_the_next_process_on_the_machine(monkeypatch, fresh_plans):
    timed = _record_timings(monkeypatch)
    weight = torch.randn(3, 6)
    chunking.chunk_rows_for(torch.randn(10, 6), weight.T)
    monkeypatch.setattr(chunking, "_PLANS", {})  # as in a new process
    monkeypatch.setattr(chunking, "_faster_plan", lambda a, b: pytest.fail("timed again"))
    assert chunking.chunk_rows_for(torch.randn(10, 6), weight.T) == 8
    assert timed == [(6, 3)] and len(json.loads(fresh_plans.read_text())) == 1


def test_a_plan_another_process_kept_while_this_one_measured_wins(fresh_plans):
    def measured_beside_another_process():  # it kept its plan for the problem meanwhile
        fresh_plans.parent.mkdir(parents=True, exist_ok=True)
        fresh_plans.write_text(json.dumps({machine_plans.plan_key("p"): 16}))
        return 8

    assert machine_plans.machine_plan("p", lambda saved: type(saved) is int, measured_beside_another_process) == 16
    assert json.loads(fresh_plans.read_text()) == {machine_plans.plan_key("p"): 16}


def test_another_thread_count_is_measured_again(monkeypatch, fresh_plans):
    timed = _record_timings(monkeypatch)
    weight = torch.randn(3, 6)
    chunking.chunk_rows_for(torch.randn(10, 6), weight.T)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        chunking.chunk_rows_for(torch.randn(10, 6), weight.T)
    finally:
        torch.set_num_threads(threads)
    assert timed == [(6, 3), (6, 3)] and len(json.loads(fresh_plans.read_text())) == 2


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]"])
def test_a_damaged_plans_file_is_measured_again_and_replaced(monkeypatch, fresh_plans, damage):
    fresh_plans.parent.mkdir()
    fresh_plans.write_text(damage)
    timed = _record_timings(monkeypatch, plan=None)
    assert chunking.chunk_rows_for(torch.randn(10, 6), torch.randn(6, 3)) is None
    assert timed == [(6, 3)] and list(json.loads(fresh_plans.read_text()).values()) == [None]


def test_an_unwritable_cache_keeps_the_plan_in_the_process(monkeypatch, fresh_plans):
    fresh_plans.parent.write_text("a file where the cache folder should be")
    timed = _record_timings(monkeypatch)
    for _ in range(2):
        assert chunking.chunk_rows_for(torch.randn(10, 6), torch.randn(6, 3)) == 8
    assert timed == [(6, 3)]


def test_no_cache_folder_at_all_keeps_the_plan_in_the_process(monkeypatch):
    monkeypatch.setattr(chunking, "_PLANS", {})
    monkeypatch.setenv("HOME", "")  # and no FINJUST_CACHE: cache_root() refuses
    monkeypatch.delenv("FINJUST_CACHE", raising=False)
    timed = _record_timings(monkeypatch)
    for _ in range(2):
        assert chunking.chunk_rows_for(torch.randn(10, 6), torch.randn(6, 3)) == 8
    assert timed == [(6, 3)]


@pytest.mark.parametrize(("halves_seconds", "plan"), [(1.0, 4), (1.7, None), (3.0, None)])
def test_timing_keeps_the_faster_way(monkeypatch, halves_seconds, plan):
    monkeypatch.setattr(chunking, "CHUNK_ROWS", 4)

    def timer(runs):
        for run in runs.values():
            run()  # both ways really run on the sample
        return {"whole": 2.0, "halves": halves_seconds}

    assert chunking._faster_plan(torch.randn(3, 8), torch.randn(8, 5), timer) == plan


def test_timing_leaves_the_random_stream_as_it_was(fresh_plans):
    a, weight = torch.randn(10, 6), torch.randn(6, 3)
    before = torch.get_rng_state()
    chunking.chunk_rows_for(a, weight)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_known_shape_costs_no_file_read(monkeypatch, fresh_plans):
    """Looked up at every matmul: the plans file and the CPU's name are read once per shape."""
    _record_timings(monkeypatch)
    reads = []
    real_read = machine_plans._read_plans
    monkeypatch.setattr(machine_plans, "_read_plans", lambda: reads.append(1) or real_read())
    weight = torch.randn(3, 6)
    for _ in range(5):
        chunking.chunk_rows_for(torch.randn(10, 6), weight.T)
    assert len(reads) == 2  # looked up, then merged with on saving


@pytest.mark.parametrize("saved", [0, -512, "512", 512.0, True])
def test_a_plan_that_is_no_row_count_is_measured_again(monkeypatch, fresh_plans, saved):
    a, weight = torch.randn(10, 6), torch.randn(6, 3)
    fresh_plans.parent.mkdir()
    fresh_plans.write_text(json.dumps({machine_plans.plan_key(chunking.problem(a, weight)): saved}))
    timed = _record_timings(monkeypatch, plan=8)
    assert chunking.chunk_rows_for(a, weight) == 8 and timed == [(6, 3)]


def test_other_plans_in_the_file_are_kept(monkeypatch, fresh_plans):
    """The file holds every kind of plan: saving one keeps the entries it cannot read."""
    fresh_plans.parent.mkdir()
    fresh_plans.write_text(json.dumps({"another machine's plan": "transposed"}))
    _record_timings(monkeypatch)
    chunking.chunk_rows_for(torch.randn(10, 6), torch.randn(6, 3))
    assert sorted(json.loads(fresh_plans.read_text()).values(), key=str) == [8, "transposed"]
