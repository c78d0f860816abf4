"""A whole run: recipe → data → pretrained model → base score → training → scorecard.

The run folder holds everything a later step needs: the resolved recipe, the split
manifest, the metrics log, checkpoints, the trained artifact and the scorecard.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finjust import atomic
from finjust.data.formats import Example
from finjust.data.prepare import PreparedData, prepare_data
from finjust.data.templates import tokenize_examples
from finjust.errors import CheckpointError
from finjust.eval.scorecard import ModelScores, build_scorecard, score_model
from finjust.methods.registry import Method, count_parameters, get_method
from finjust.models.load import LoadedModel, load_model
from finjust.objectives.sft import eval_batches
from finjust.recipe import Recipe, save_recipe
from finjust.train.checkpoint import checkpoint_for_step, load_weights, restore_trainable
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model

EventHandler = Callable[[str, dict[str, Any]], None]


def _quiet(kind: str, payload: dict[str, Any]) -> None:
    return None


@dataclass
class RunResult:
    run_dir: Path
    scorecard: dict[str, Any]


class RunFolder:
    """Paths inside a run folder, in one place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.recipe = self.root / "recipe.yaml"
        self.manifest = self.root / "manifest.json"
        self.metrics = self.root / "metrics.jsonl"
        self.checkpoints = self.root / "checkpoints"
        self.base_scores = self.root / "base_scores.json"
        self.scorecard = self.root / "scorecard.json"

    def artifact(self, method: Method) -> Path:
        return self.root / method.artifact_dir


def training_dtype(recipe: Recipe, method: Method) -> str:
    """Methods that train the pretrained weights keep fp32 masters; the others load as chosen."""
    return "float32" if method.trains_base_weights else recipe.model.dtype


def compute_dtype(recipe: Recipe, loaded: LoadedModel) -> torch.dtype | None:
    """The autocast dtype: bf16 where the hardware has it, else none (plain fp32)."""
    from finjust.models.load import choose_dtype

    return torch.bfloat16 if choose_dtype(recipe.model.dtype, loaded.device) == torch.bfloat16 else None


def run_recipe(recipe: Recipe, resume: bool = False, on_event: EventHandler = _quiet) -> RunResult:
    """Train as the recipe says and score the result; ``resume`` continues an interrupted run."""
    folder = RunFolder(recipe.output.dir)
    _prepare_folder(folder, recipe, resume)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    method = get_method(recipe.method.name)
    data = _prepare_checked_data(recipe, folder, resume)
    on_event("phase", {"text": f"data: {data.manifest['sizes']}"})
    on_event("phase", {"text": f"loading model {recipe.model.name}"})
    loaded = load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device)
    autocast = compute_dtype(recipe, loaded)
    test = _test_examples(recipe, data)
    base = _base_scores(recipe, loaded, test, folder, autocast, on_event)
    model = method.apply(loaded.model, recipe.method.options)
    trainable, total = count_parameters(model)
    on_event("method", {"name": method.name, "trainable": trainable, "total": total})
    setup = _loop_setup(recipe, loaded, data, folder, autocast, on_event, packing=method.supports_packing)
    state = train_model(model, setup, resume=resume)
    restore_trainable(model, load_weights(checkpoint_for_step(folder.checkpoints, state.best_step)))
    atomic.write_folder(folder.artifact(method), lambda tmp: _save_artifact(method, model, loaded, tmp))
    on_event("phase", {"text": f"best checkpoint: step {state.best_step}; scoring the tuned model"})
    tuned = score_model(model, loaded.tokenizer, test, recipe.eval, recipe.data.max_length, loaded.device, autocast,
                        packing=method.supports_packing)  # fmt: skip
    scorecard = build_scorecard(test, base, tuned, recipe.eval)
    scorecard["best_step"] = state.best_step
    scorecard["stopped_early"] = state.stopped_early
    atomic.write_json(folder.scorecard, scorecard)
    return RunResult(folder.root, scorecard)


def _prepare_folder(folder: RunFolder, recipe: Recipe, resume: bool) -> None:
    if folder.root.exists() and any(folder.root.iterdir()) and not resume:
        if not recipe.output.overwrite:
            raise CheckpointError(
                f"run folder {folder.root} already exists; continue it with `finjust train --resume "
                f"{folder.root}`, choose another output.dir, or set output.overwrite=true"
            )
        shutil.rmtree(folder.root)
    if resume and not folder.recipe.is_file():
        raise CheckpointError(f"{folder.root} is not a finjust run folder (no recipe.yaml)")
    folder.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_recipe(recipe, folder.recipe)


def _prepare_checked_data(recipe: Recipe, folder: RunFolder, resume: bool) -> PreparedData:
    """Split the data; a resumed run must see exactly the data the interrupted one saw."""
    data = prepare_data(recipe.data, recipe.train.seed)
    if resume and folder.manifest.is_file():
        import json

        saved = json.loads(folder.manifest.read_text())
        if saved["sha256"] != data.manifest["sha256"]:
            raise CheckpointError(f"the data changed since {folder.root} started; its splits no longer match")
    else:
        atomic.write_json(folder.manifest, data.manifest)
    return data


def _test_examples(recipe: Recipe, data: PreparedData) -> list[Example]:
    test = data.splits.test
    return test[: recipe.eval.max_examples] if recipe.eval.max_examples else test


def _base_scores(
    recipe: Recipe, loaded: LoadedModel, test: list[Example], folder: RunFolder,
    autocast: torch.dtype | None, on_event: EventHandler,
) -> ModelScores:  # fmt: skip
    """Score the pretrained model once; a resumed run reads the saved result."""
    import json

    if folder.base_scores.is_file():
        return ModelScores.from_json(json.loads(folder.base_scores.read_text()))
    on_event("phase", {"text": f"scoring the base model on {len(test)} test examples"})
    scores = score_model(loaded.model, loaded.tokenizer, test, recipe.eval, recipe.data.max_length,
                         loaded.device, autocast)  # fmt: skip
    atomic.write_json(folder.base_scores, scores.to_json())
    return scores


def _loop_setup(
    recipe: Recipe, loaded: LoadedModel, data: PreparedData, folder: RunFolder,
    autocast: torch.dtype | None, on_event: EventHandler, packing: bool,
) -> LoopSetup:  # fmt: skip
    train, report = tokenize_examples(data.splits.train, loaded.tokenizer, recipe.data.max_length)
    validation, _ = tokenize_examples(data.splits.validation, loaded.tokenizer, recipe.data.max_length)
    if report.truncated or report.dropped_no_trainable_token:
        on_event("warning", {"text": f"{report.truncated} training examples truncated to data.max_length="
                 f"{recipe.data.max_length}; {report.dropped_no_trainable_token} dropped (no answer token left)"})
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


def _save_artifact(method: Method, model: nn.Module, loaded: LoadedModel, tmp: Path) -> None:
    method.save(model, tmp)
    loaded.tokenizer.save_pretrained(tmp)
