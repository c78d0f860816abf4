"""Choices between equal computations that only timing on the machine can make, kept on disk.

oneDNN, which runs torch's bf16 CPU matmuls, runs some problems faster split into row chunks
(:mod:`finjust.models.row_chunked_mm`) or with an operand in the other memory layout (the
head's input gradient in :mod:`finjust.objectives.linear_ce`), and no rule of shape predicts
which: it differs between shapes and between CPUs. So each such choice, a *plan*, is timed
both ways at its first use.

Another plan changes which kernel computes a result, and so its bf16 rounding: a run's
numbers depend on its plans. Timed afresh in every process, the plans followed the machine's
load at that moment (beside a busy process, 4 of 8 timings of one matmul chose the other way),
and so did a run's scorecard. A plan is therefore measured once per machine, thread count and
torch version, and kept in the plans file (:func:`plans_file`): a machine repeats its runs, and
a resumed run continues with the plans it started with. Delete the file to measure again
(after moving the machine, say).
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from finjust import atomic
from finjust.errors import ModelLoadError
from finjust.models.load import cache_root

Plan = TypeVar("Plan")
Timer = Callable[[dict[str, Callable[[], object]]], dict[str, float]]


def machine_plan(problem: str, valid: Callable[[object], bool], measure: Callable[[], Plan]) -> Plan:
    """The plans file's plan for ``problem`` on this machine, or ``measure()``'s, then kept there.

    A saved entry that ``valid`` refuses (a damaged or foreign file) is measured again.
    """
    key = plan_key(problem)
    saved = _read_plans()
    if key in saved and valid(saved[key]):
        return saved[key]  # type: ignore[return-value]  # valid() vouches for it
    return _kept(key, measure(), valid)


def plans_file() -> Path:
    """Where this machine's plans are kept: beside the converted models."""
    return cache_root() / "matmul-plans.json"


def plan_key(problem: str) -> str:
    """``problem`` on this CPU, with this many threads and this torch: what else decides how oneDNN runs it."""
    return f"{_cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {problem}"


def best_times(runs: Mapping[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Each run's best time over ``rounds`` taken in turn, so that a burst of load elsewhere
    slows both ways rather than one."""
    for run in runs.values():
        run()  # warm-up: oneDNN builds its kernel for the shape on the first call
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_plans() -> dict[str, object]:
    """The plans file's entries; none where it is missing or damaged (they are measured again)."""
    try:
        saved = json.loads(plans_file().read_text())
    except (OSError, ValueError, ModelLoadError):  # ModelLoadError: no cache folder (an empty HOME)
        return {}
    return saved if isinstance(saved, dict) else {}


def _kept(key: str, plan: Plan, valid: Callable[[object], bool]) -> Plan:
    """``plan`` added to the file (merged with what other processes wrote since), unless another
    process kept one for ``key`` while this one measured: the first kept wins, so that both
    follow one plan (the later one's run, resumed, would have read the other's). A cache that
    cannot be written leaves the plan to this process."""
    saved = _read_plans()
    if key in saved and valid(saved[key]):
        return saved[key]  # type: ignore[return-value]  # valid() vouches for it
    try:
        atomic.write_json(plans_file(), {**saved, key: plan})
    except (OSError, ModelLoadError):
        pass
    return plan
