"""Supervised fine-tuning of a causal LM, as a run does it: the model to train, the base's
scores (kept for a resume), the training loop's setup with its forgetting guard and replay,
the trained artifact and the scorecard with retention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finjust import atomic
from finjust.data.example import Example
from finjust.data.prepare import PreparedData
from finjust.data.templates import TokenizedExample, prompt_ids, tokenize_examples
from finjust.eval.forgetting import probe_model, replay_texts, retention, text_examples
from finjust.eval.scorecard import ModelScores, build_scorecard, score_model
from finjust.events import EventHandler
from finjust.methods.preflight import check_method_fits
from finjust.methods.registry import Method, count_parameters
from finjust.models.load import LoadedModel, load_model
from finjust.objectives.sft import eval_batches
from finjust.recipe import Recipe
from finjust.train.checkpoint import best_weights, restore_trainable
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model
from finjust.train.max_length import answers_past_context, fitted_to_model
from finjust.train.run import RunContext, base_scores_once, compute_dtype, test_examples, training_dtype
from finjust.train.run_folder import RunFolder


def train_sft(run: RunContext) -> dict[str, Any]:
    """Supervised fine-tuning of a causal LM; returns the scorecard (with retention when probed)."""
    recipe, folder, method, data, resume, on_event = (
        run.recipe, run.folder, run.method, run.data, run.resume, run.on_event
    )  # fmt: skip
    test = test_examples(recipe, data)
    on_event("phase", {"text": f"loading model {recipe.model.name}"})
    loaded = load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device)
    check_method_fits(method, recipe.method.options, loaded.model, loaded.dtype)
    recipe = fitted_to_model(recipe, loaded, on_event)
    autocast = compute_dtype(recipe, loaded)
    base = _base_scores(recipe, loaded, test, folder, autocast, on_event)
    loaded = _training_model(recipe, method, loaded, on_event)
    torch.manual_seed(recipe.train.seed)  # adapters start from random weights: part of the seeded run
    model = method.apply(loaded.model, recipe.method.options)
    trainable, total = count_parameters(model)
    on_event("method", {"name": method.name, "trainable": trainable, "total": total})
    setup = _loop_setup(recipe, loaded, data, folder, autocast, on_event, packing=method.supports_packing)
    setup.retention_probe = _guard_probe(recipe, loaded, base, autocast, method.supports_packing)
    setup.recompute = method.supports_recompute
    setup.on_more_steps = lambda: folder.retire_finished(method)
    state = train_model(model, setup, resume=resume)
    assert state.best_step is not None  # train_model sets it before it returns
    restore_trainable(model, best_weights(folder.checkpoints, state.best_step))
    atomic.write_folder(folder.artifact(method), lambda tmp: _save_artifact(method, model, loaded, tmp))
    on_event("phase", {"text": f"best checkpoint: step {state.best_step}; scoring the tuned model"})
    scorecard = score_tuned(recipe, model, loaded, test, base, autocast, method.supports_packing, on_event)
    scorecard.update(best_step=state.best_step, stopped_early=state.stopped_early, stop_reason=state.stop_reason)
    return scorecard


def score_tuned(
    recipe: Recipe, model: nn.Module, loaded: LoadedModel, test: list[Example], base: ModelScores,
    autocast: torch.dtype | None, packing: bool, on_event: EventHandler,
) -> dict[str, Any]:  # fmt: skip
    """The scorecard of the tuned model against the base, with retention when the base was probed."""
    tuned = score_model(model, loaded.tokenizer, test, recipe.eval, recipe.data.max_length, loaded.device, autocast,
                        packing=packing)  # fmt: skip
    scorecard = build_scorecard(test, base, tuned, recipe.eval)
    if base.probe:
        on_event("phase", {"text": "probing the tuned model's general knowledge"})
        tuned_probe = probe_model(model, loaded.tokenizer, loaded.device, autocast, packing=packing)
        scorecard["retention"] = retention(base.probe, tuned_probe)
    return scorecard


def _training_model(recipe: Recipe, method: Method, loaded: LoadedModel, on_event: EventHandler) -> LoadedModel:
    """The model to train: the one just scored, or a fresh load where the method needs its own (QLoRA: 4-bit)."""
    for text in method.warnings_for(recipe.method.options, loaded.device):
        on_event("warning", {"text": text})
    extra = method.model_load_kwargs(recipe.method.options, loaded.dtype)
    if not extra:
        return loaded
    # The base is scored in full precision like every other method's; training needs a fresh
    # load anyway, and a 4-bit model must not generate before its adapter is attached
    # (shared/MODELS.md: its LoRA gradients are lost). Reloading from the cache takes <1 s.
    on_event("phase", {"text": f"loading {recipe.model.name} again as {method.name} needs it"})
    return load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device, extra)


def _base_scores(
    recipe: Recipe, loaded: LoadedModel, test: list[Example], folder: RunFolder,
    autocast: torch.dtype | None, on_event: EventHandler,
) -> ModelScores:  # fmt: skip
    """Score the pretrained model once; a resumed run reads the saved result."""
    return base_scores_once(folder, test, lambda: score_base(recipe, loaded, test, autocast, on_event))


def score_base(
    recipe: Recipe, loaded: LoadedModel, test: list[Example], autocast: torch.dtype | None, on_event: EventHandler
) -> ModelScores:
    """The pretrained model's scores, with its general-knowledge probe when retention is wanted."""
    on_event("phase", {"text": f"scoring the base model on {len(test)} test examples"})
    scores = score_model(loaded.model, loaded.tokenizer, test, recipe.eval, recipe.data.max_length,
                         loaded.device, autocast)  # fmt: skip
    if scores.answers:
        _warn_past_context(recipe, loaded, test, on_event)
    if recipe.eval.retention or recipe.train.forgetting_guard:
        on_event("phase", {"text": "probing the base model's general knowledge"})
        scores.probe = probe_model(loaded.model, loaded.tokenizer, loaded.device, autocast)
    return scores


def _warn_past_context(recipe: Recipe, loaded: LoadedModel, test: list[Example], on_event: EventHandler) -> None:
    lengths = [len(prompt_ids(loaded.tokenizer, example)) for example in test]
    over, positions = answers_past_context(loaded, lengths, recipe.eval.max_new_tokens)
    if over:
        on_event("warning", {"text": f"{over} of {len(test)} test prompts with eval.max_new_tokens "
                             f"{recipe.eval.max_new_tokens} run past the model's {positions} positions: their "
                             "answers, generated beyond its context, still count in the answer metrics"})  # fmt: skip


def _loop_setup(
    recipe: Recipe, loaded: LoadedModel, data: PreparedData, folder: RunFolder,
    autocast: torch.dtype | None, on_event: EventHandler, packing: bool,
) -> LoopSetup:  # fmt: skip
    train, report = tokenize_examples(data.splits.train, loaded.tokenizer, recipe.data.max_length,
                                      recipe.data.too_long)  # fmt: skip
    if recipe.train.replay:
        replay = _replay_examples(recipe, loaded, len(train))
        on_event("phase", {"text": f"replay: {len(replay)} general-text passages mixed into training"})
        train = train + replay
    validation, checked = tokenize_examples(data.splits.validation, loaded.tokenizer, recipe.data.max_length,
                                            recipe.data.too_long)  # fmt: skip
    for split, split_report in (("training", report), ("validation", checked)):
        if split_report.truncated or split_report.dropped_no_trainable_token or split_report.dropped_too_long:
            on_event("warning", {"text": f"{split_report.truncated} {split} examples truncated to data.max_length="
                     f"{recipe.data.max_length}; {split_report.dropped_no_trainable_token} dropped (no answer token "
                     f"left); {split_report.dropped_too_long} dropped as too long"})  # fmt: skip
    if data.splits.validation and not validation:
        on_event("warning", {"text": f"none of the {len(data.splits.validation)} validation examples is left to "
                             "validate on: no early stopping, and the last step is the one shipped"})  # fmt: skip
    return LoopSetup(
        train=train,
        validation=eval_batches(validation, packing),
        cfg=recipe.train,
        lr=recipe.learning_rate,
        checkpoints=folder.checkpoints,
        log=MetricsLog(folder.metrics),
        device=loaded.device,
        autocast_dtype=autocast,
        on_event=on_event,
        packing=packing,
    )


def _guard_probe(
    recipe: Recipe, loaded: LoadedModel, base: ModelScores, autocast: torch.dtype | None, packing: bool
) -> Callable[[nn.Module], float] | None:
    """The retention measurement the loop runs at each evaluation when a forgetting guard is set."""
    if not recipe.train.forgetting_guard or not base.probe:
        return None
    base_probe = base.probe

    def measure(model: nn.Module) -> float:
        now = probe_model(model, loaded.tokenizer, loaded.device, autocast, packing=packing)
        return float(retention(base_probe, now)["retention"])

    return measure


def _replay_examples(recipe: Recipe, loaded: LoadedModel, n_train: int) -> list[TokenizedExample]:
    """General passages mixed into training (the replay mitigation), the same ones every run."""
    wanted = round(recipe.train.replay * n_train)
    pool = text_examples(loaded.tokenizer, replay_texts(), recipe.data.max_length)
    return [pool[i % len(pool)] for i in range(wanted)]


def _save_artifact(method: Method, model: nn.Module, loaded: LoadedModel, tmp: Path) -> None:
    method.save(model, tmp)
    loaded.tokenizer.save_pretrained(tmp)
