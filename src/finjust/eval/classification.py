"""The classification scorecard: accuracy and macro-F1 of base and tuned on the test split.

"Base" is the pretrained model with a freshly initialised, untrained head: its predictions
are chance-level by construction, so beating it says little. The scorecard therefore also
carries a majority-class baseline (always predict the most frequent training label), the
bar a useful classifier must clear; the note in the scorecard says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from finjust.data.example import Example
from finjust.eval.metrics import METRICS
from finjust.eval.scorecard import ModelScores, aggregate, build_scorecard
from finjust.objectives.classification import (
    CLASSIFICATION_METRICS,
    LabelBatcher,
    LabelledTokens,
    LabelMap,
    majority_label,
    predict,
)

BASE_NOTE = (
    "base = the pretrained model with an untrained classification head (chance level); "
    "compare the tuned model with the majority-class baseline too"
)


def score_classifier(
    model: nn.Module, items: Sequence[LabelledTokens], batcher: LabelBatcher, labels: LabelMap,
    device: torch.device, autocast_dtype: torch.dtype | None, batch_size: int = 32,
) -> ModelScores:  # fmt: skip
    """Accuracy, macro-F1 and mean test cross-entropy of ``model``; answers are the predicted labels."""
    predicted, losses = predict(model, batcher.batches(items, batch_size), device, autocast_dtype)
    answers = [labels.label_of(i) for i in predicted]
    references = [labels.label_of(item.label) for item in items]
    return scores_of(answers, references, [(loss, 1) for loss in losses])


def scores_of(
    answers: Sequence[str], references: Sequence[str], losses: Sequence[tuple[float, int]] | None = None
) -> ModelScores:
    """:class:`ModelScores` of predicted against reference labels (plus per-example losses when given)."""
    items: dict[str, list[Any]] = {}
    if losses is not None:
        items["test_loss"] = list(losses)
    for name in CLASSIFICATION_METRICS:
        metric = METRICS.get(name)
        items[name] = [metric.item(a, r, None) for a, r in zip(answers, references, strict=True)]
    metrics = {name: aggregate(name, values) for name, values in items.items()}
    return ModelScores(metrics, list(answers), items)


def classification_scorecard(
    test: Sequence[Example], train: Sequence[Example], base: ModelScores, tuned: ModelScores, eval_cfg: Any
) -> dict[str, Any]:
    """The scorecard (as :func:`~finjust.eval.scorecard.build_scorecard`) plus labels and baselines."""
    scorecard = build_scorecard(test, base, tuned, eval_cfg)
    majority = majority_label(train)
    references = [e.label or "" for e in test]
    baseline = scores_of([majority] * len(test), references)
    scorecard["objective"] = "classification"
    scorecard["base_note"] = BASE_NOTE
    scorecard["baselines"] = {"majority_class": {"label": majority, **baseline.metrics}}
    scorecard["test_labels"] = {label: references.count(label) for label in sorted(set(references))}
    return scorecard

