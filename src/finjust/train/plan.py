"""The data order of a whole run, fixed up front from the seed.

Every optimizer step's micro-batches are known before training starts, so a resumed run
continues with exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from finjust.errors import DataError, RecipeError

#: example visits a run may plan: the whole plan is held in memory (a list of indices), and
#: max_steps: 1e30 spun before any event while 1e8 ran out of memory
MAX_PLANNED_EXAMPLES = 100_000_000


@dataclass(frozen=True)
class StepPlan:
    """``steps[s][m]`` lists the example indices of micro-batch ``m`` of optimizer step ``s + 1``."""

    steps: list[list[list[int]]]
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def ends_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or step == self.total_steps


def plan_size_problem(setting: str, steps: int, per_step: int) -> str | None:
    """Why ``steps`` of ``per_step`` examples are more than a run plans up front, or None."""
    if steps * per_step <= MAX_PLANNED_EXAMPLES:
        return None
    return (f"{setting}: {steps:,} steps of {per_step} examples plan more than the {MAX_PLANNED_EXAMPLES:,} example "
            "visits a run plans up front (over a day of training even on a GPU); train fewer steps")


def plan_steps(
    n_examples: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int | None, seed: int
) -> StepPlan:
    """Shuffle each epoch with ``seed + epoch`` and group examples into steps of micro-batches.

    Raises:
        DataError: no examples to train on (all dropped as too long, say).
        RecipeError: more steps than a run plans up front (:data:`MAX_PLANNED_EXAMPLES`).
    """
    if n_examples <= 0:
        raise DataError("no training examples are left to train on (check data.too_long and data.max_length: "
                        "examples over max_length are dropped with too_long: drop)")
    micro_per_epoch = math.ceil(n_examples / batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / grad_accum))
    total = max_steps if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
    if problem := plan_size_problem("train.max_steps" if max_steps is not None else "train.epochs", total,
                                    batch_size * grad_accum):  # fmt: skip
        raise RecipeError([problem], "train")
    steps: list[list[list[int]]] = []
    epoch = 0
    while len(steps) < total:
        order = list(range(n_examples))
        random.Random(seed + epoch).shuffle(order)
        micro = [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]
        for start in range(0, len(micro), grad_accum):
            steps.append(micro[start : start + grad_accum])
        epoch += 1
    return StepPlan(steps[:total], steps_per_epoch)
