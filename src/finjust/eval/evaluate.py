"""Score a finished run folder again: base vs the saved tuned artifact (``finjust eval``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finjust import atomic
from finjust.data.prepare import prepare_data
from finjust.errors import CheckpointError
from finjust.eval.scorecard import build_scorecard, score_model
from finjust.methods.registry import get_method
from finjust.models.load import load_model
from finjust.recipe import load_recipe
from finjust.train.run import RunFolder, compute_dtype, training_dtype


def evaluate_run(
    run_dir: str | Path, on_event: Callable[[str, dict[str, Any]], None] = lambda kind, payload: None
) -> dict[str, Any]:
    """Rebuild the run's test split (checked against its manifest) and score base and tuned."""
    folder = RunFolder(run_dir)
    if not folder.recipe.is_file():
        raise CheckpointError(f"{folder.root} is not a finjust run folder (no recipe.yaml)")
    recipe = load_recipe(folder.recipe)
    method = get_method(recipe.method.name)
    artifact = folder.artifact(method)
    if not artifact.is_dir():
        raise CheckpointError(f"{folder.root} has no trained {method.artifact_dir}/ yet; finish or resume the run")
    data = prepare_data(recipe.data, recipe.train.seed)
    saved = json.loads(folder.manifest.read_text())
    if saved["sha256"]["test"] != data.manifest["sha256"]["test"]:
        raise CheckpointError(f"the test data changed since {folder.root} was trained; its split no longer matches")
    test = data.splits.test[: recipe.eval.max_examples] if recipe.eval.max_examples else data.splits.test
    loaded = load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device)
    autocast = compute_dtype(recipe, loaded)
    score = lambda model, packing: score_model(  # noqa: E731
        model, loaded.tokenizer, test, recipe.eval, recipe.data.max_length, loaded.device, autocast, packing
    )
    on_event("phase", {"text": f"scoring the base model on {len(test)} test examples"})
    base = score(loaded.model, True)
    on_event("phase", {"text": f"scoring the tuned model from {artifact}"})
    tuned = score(method.load(loaded.model, artifact), method.supports_packing)
    scorecard = build_scorecard(test, base, tuned, recipe.eval)
    atomic.write_json(folder.scorecard, scorecard)
    return scorecard
