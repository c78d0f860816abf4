"""A classification run: label map → model with a new head → base score → training → scorecard.

The same loop as SFT trains it (checkpoints, resume, validation loss per evaluation, early
stopping), given this objective's padded batches and cross-entropy over labels. Any method
applies: peft methods train and save the head through ``modules_to_save`` (task type
``SEQ_CLS``); for the others the head is unfrozen after the method froze what it froze.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from finjust import atomic
from finjust.data.example import Example
from finjust.errors import MethodError
from finjust.eval.classification import classification_scorecard, score_classifier
from finjust.eval.scorecard import ModelScores
from finjust.methods.preflight import check_method_fits
from finjust.methods.registry import METHODS, count_parameters, get_method
from finjust.models.classifier import load_classifier, unfreeze_head
from finjust.models.load import LoadedModel
from finjust.objectives.classification import (
    LABELS_FILE,
    LabelBatcher,
    LabelledTokens,
    LabelMap,
    label_loss_sum,
    tokenize_labelled,
)
from finjust.train.checkpoint import best_weights, restore_trainable
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model
from finjust.train.max_length import fitted_to_model
from finjust.train.run import RunContext, base_scores_once, compute_dtype, test_examples, training_dtype

#: examples per forward pass when scoring and validating
EVAL_BATCH = 32


def classifier_methods() -> list[str]:
    """The methods that can train a classifier (each method says so: ``classification_blocker``)."""
    import finjust.methods  # noqa: F401  (registers the built-in methods)

    return [name for name in METHODS.names() if get_method(name).classification_blocker is None]


def train_classifier(run: RunContext) -> dict[str, Any]:
    """Train a classification head (and what the method trains) and score base vs tuned on the test split."""
    recipe, folder, method, on_event = run.recipe, run.folder, run.method, run.on_event
    if method.classification_blocker:
        raise MethodError(f"method {method.name} cannot train a classifier yet: {method.classification_blocker}; "
                          f"use {', '.join(classifier_methods())}")  # fmt: skip
    if recipe.train.forgetting_guard or recipe.train.replay:
        on_event("warning", {"text": "train.forgetting_guard and train.replay apply to generative runs: "
                             "a classifier's general knowledge is not probed, nor replayed"})  # fmt: skip
    splits = run.data.splits
    labels = LabelMap.from_examples(splits.train)
    labels.check(splits.validation, "validation")
    labels.check(splits.test, "test")
    atomic.write_json(folder.root / LABELS_FILE, labels.to_json())
    on_event("phase", {"text": f"loading {recipe.model.name} with a {len(labels.labels)}-way classification head"})
    torch.manual_seed(recipe.train.seed)  # the new head's initial weights are part of the seeded run
    loaded = load_classifier(recipe.model.name, labels.id2label, training_dtype(recipe, method), recipe.model.device)
    check_method_fits(method, recipe.method.options, loaded.model, loaded.dtype)
    recipe = fitted_to_model(recipe, loaded, on_event)
    run = dataclasses.replace(run, recipe=recipe)
    autocast = compute_dtype(recipe, loaded)
    batcher = LabelBatcher(int(loaded.tokenizer.pad_token_id))
    test = test_examples(recipe, run.data)
    test_items = _tokenized(run, loaded, labels, test, "test")
    base = _base_scores(run, loaded, test, test_items, batcher, labels, autocast)
    torch.manual_seed(recipe.train.seed)
    model = method.apply(loaded.model, recipe.method.options)
    head = unfreeze_head(model)
    trainable, total = count_parameters(model)
    on_event("method", {"name": method.name, "trainable": trainable, "total": total})
    validation = _tokenized(run, loaded, labels, splits.validation, "validation")
    setup = LoopSetup(
        train=_tokenized(run, loaded, labels, splits.train, "training"),
        validation=batcher.batches(validation, EVAL_BATCH),
        cfg=recipe.train, lr=recipe.learning_rate, checkpoints=folder.checkpoints, log=MetricsLog(folder.metrics),
        device=loaded.device, autocast_dtype=autocast, on_event=on_event, packing=False,
        make_batch=batcher, loss_sum=label_loss_sum, new_weights=frozenset(head),
        on_more_steps=lambda: folder.retire_finished(method),
    )  # fmt: skip
    state = train_model(model, setup, resume=run.resume)
    assert state.best_step is not None  # train_model sets it before it returns
    restore_trainable(model, best_weights(folder.checkpoints, state.best_step))
    atomic.write_folder(folder.artifact(method), lambda tmp: _save(run, model, loaded, labels, tmp))
    on_event("phase", {"text": f"best checkpoint: step {state.best_step}; scoring the tuned model"})
    tuned = score_classifier(model, test_items, batcher, labels, loaded.device, autocast, EVAL_BATCH)
    scorecard = classification_scorecard(test, splits.train, base, tuned, recipe.eval)
    scorecard.update(best_step=state.best_step, stopped_early=state.stopped_early, stop_reason=state.stop_reason)
    return scorecard


def _tokenized(
    run: RunContext, loaded: LoadedModel, labels: LabelMap, examples: Sequence[Example], split: str
) -> list[LabelledTokens]:
    items, truncated = tokenize_labelled(examples, loaded.tokenizer, labels, run.recipe.data.max_length)
    if truncated:
        run.on_event("warning", {"text": f"{truncated} {split} texts truncated to data.max_length="
                                 f"{run.recipe.data.max_length} tokens"})  # fmt: skip
    return items


def _base_scores(
    run: RunContext, loaded: LoadedModel, test: list[Example], items: list[LabelledTokens], batcher: LabelBatcher,
    labels: LabelMap, autocast: torch.dtype | None,
) -> ModelScores:  # fmt: skip
    """The untrained head's scores (chance level), once; a resumed run reads the saved ones."""

    def score() -> ModelScores:
        run.on_event("phase", {"text": f"scoring the base model (untrained head) on {len(items)} test examples"})
        loaded.model.eval()
        return score_classifier(loaded.model, items, batcher, labels, loaded.device, autocast, EVAL_BATCH)

    return base_scores_once(run.folder, test, score)


def _save(run: RunContext, model: torch.nn.Module, loaded: LoadedModel, labels: LabelMap, tmp: Path) -> None:
    run.method.save(model, tmp)
    loaded.tokenizer.save_pretrained(tmp)
    atomic.write_json(tmp / LABELS_FILE, labels.to_json())
