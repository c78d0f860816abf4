"""The registry of objectives: what loss a run trains with, chosen by the data's task.

An objective owns its batches, its loss and its scorecard; the method (which weights train)
is chosen independently. Each entry names the function that runs a whole training for it as
``"module:function"`` (imported when a run needs it), so this registry imports no trainer and
trainers may import anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finjust.data.example import SFT_TASKS, TASK_CLASSIFICATION
from finjust.errors import DataError
from finjust.registry import Registry


@dataclass(frozen=True)
class Objective:
    """One loss and the data tasks it trains on."""

    name: str
    #: the ``Example.task`` values this objective consumes
    tasks: tuple[str, ...]
    #: ``"module:function"`` of the function that trains and scores a run (takes a ``RunContext``)
    trainer: str
    #: one line for help texts
    summary: str
    #: True when the tokenizer must carry a chat template (conversations are rendered with it)
    needs_chat_template: bool = True

    def train_function(self) -> Callable[[Any], dict[str, Any]]:
        """The function that trains and scores a run with this objective."""
        module, function = self.trainer.split(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.add("sft", Objective(
    "sft", SFT_TASKS, "finjust.train.sft:train_sft",
    "supervised fine-tuning: next-token loss on the answers (chat, instruction, completion, text data)",
))  # fmt: skip
OBJECTIVES.add("classification", Objective(
    "classification", (TASK_CLASSIFICATION,), "finjust.train.classify:train_classifier",
    "a classification head on an encoder or decoder, cross-entropy over the labels (text/label data)",
    needs_chat_template=False,
))  # fmt: skip


def objective_for_task(task: str) -> Objective:
    """The objective that trains examples of ``task`` (the data format decides the objective).

    Raises:
        DataError: when no registered objective trains such records (e.g. preference data).
    """
    for name in OBJECTIVES:
        objective = OBJECTIVES.get(name)
        if task in objective.tasks:
            return objective
    trained = "; ".join(f"{n}: {', '.join(OBJECTIVES.get(n).tasks)}" for n in OBJECTIVES)
    raise DataError(f"the data are {task} records, which no objective trains yet (objectives and the "
                    f"records they train: {trained}); convert them, e.g. to instruction or chat records for SFT")
