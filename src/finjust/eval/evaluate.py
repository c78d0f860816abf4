"""Score a finished run folder again: base vs the saved tuned artifact (``finjust eval``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from finjust import atomic
from finjust.data.example import TASK_CLASSIFICATION, Example
from finjust.data.prepare import PreparedData, prepare_data
from finjust.errors import CheckpointError
from finjust.events import EventHandler, ignore_events
from finjust.methods.registry import Method, get_method, load_trained
from finjust.models.load import LoadedModel, load_model
from finjust.recipe import Recipe, load_recipe
from finjust.train.max_length import fitted_to_model
from finjust.train.resume_checks import changed_files, read_manifest
from finjust.train.run import compute_dtype, test_examples, training_dtype
from finjust.train.run_folder import RunFolder
from finjust.train.saved_json import read_saved_object
from finjust.train.sft import score_base, score_tuned


@dataclass
class TrainedRun:
    """A finished run folder: its recipe, method and trained artifact (what loading the tuned model needs)."""

    folder: RunFolder
    recipe: Recipe
    method: Method
    artifact: Path


@dataclass
class RunInputs(TrainedRun):
    """A finished run folder opened for scoring: recipe, method, artifact and the checked splits."""

    data: PreparedData
    test: list[Example]


def open_trained(run_dir: str | Path) -> TrainedRun:
    """Read a run folder's recipe and find its trained artifact, without touching its data.

    Raises:
        CheckpointError: not a run folder, or no trained artifact yet.
    """
    folder = RunFolder(run_dir).require()
    _refuse_classification(folder)
    recipe = load_recipe(folder.recipe)
    method = get_method(recipe.method.name)
    return TrainedRun(folder, recipe, method, folder.trained_artifact(method))


def _refuse_classification(folder: RunFolder) -> None:
    if folder.task() == TASK_CLASSIFICATION:
        scorecard = (f"its scorecard is {folder.scorecard}" if folder.scorecard.is_file() else
                     f"it has not finished (continue it with `finjust train --resume {folder.root}`)")  # fmt: skip
        raise CheckpointError(f"{folder.root} is a classification run: {scorecard}; scoring again, comparing and "
                              "serving work on generative runs so far (a classifier exports with --format onnx)")


def open_run(run_dir: str | Path) -> RunInputs:
    """Read a run folder and rebuild its splits, refusing training or test splits that no longer match the manifest.

    Raises:
        CheckpointError: not a run folder, no trained artifact yet, or the training or test data changed.
    """
    trained = open_trained(run_dir)
    folder, recipe, method, artifact = trained.folder, trained.recipe, trained.method, trained.artifact
    data = prepare_data(recipe.data, recipe.train.seed)
    saved = read_manifest(folder.manifest, why="it records the splits the run was trained and tested on, so "
                                                "scoring cannot check that they still match")
    # the training split matters too: compare's few-shot examples and RAG index come from it, so a
    # training file edited since (say, the test questions appended) would leak answers into them
    changed = [split for split in ("train", "test") if saved["sha256"][split] != data.manifest["sha256"][split]]
    if changed:
        raise CheckpointError(f"the {' and '.join(changed)} data changed since {folder.root} was trained "
                              f"(its splits no longer match the manifest{changed_files(saved, data.manifest)}); "
                              "restore the data it was trained on, or train a new run on the new data")  # fmt: skip
    test = test_examples(recipe, data)
    return RunInputs(folder, recipe, method, artifact, data, test)


def load_tuned(run: TrainedRun, loaded: LoadedModel, dtype: str | None = None) -> tuple[nn.Module, LoadedModel]:
    """The run's tuned model on ``loaded``'s base (reloaded first where the method loads it its own
    way, in ``dtype``, by default the one it trained in: export compares in fp32 whatever it was)."""
    recipe, method = run.recipe, run.method
    extra = method.model_load_kwargs(recipe.method.options, loaded.dtype)
    if extra:  # the adapter was trained on a base loaded the method's way (QLoRA: 4-bit)
        # on the device ``loaded`` is on: export loads its base on the CPU, whatever the recipe says
        loaded = load_model(recipe.model.name, dtype or training_dtype(recipe, method), loaded.device.type, extra)
    return load_trained(method, loaded.model, run.artifact), loaded


def evaluate_run(
    run_dir: str | Path, on_event: EventHandler = ignore_events
) -> dict[str, Any]:
    """Rebuild the run's test split (checked against its manifest) and score base and tuned.

    Returns:
        The scorecard, as training writes it; it replaces the run's ``scorecard.json``, keeping
        what only training knows (``best_step``, ``stopped_early``, ``stop_reason``).

    Raises:
        CheckpointError: not a finished run folder, a file of it damaged, or its data changed since.
        RecipeError, MethodError, ModelLoadError: its recipe, trained artifact or model cannot be read.
    """
    run = open_run(run_dir)
    folder, recipe, method, artifact, test = run.folder, run.recipe, run.method, run.artifact, run.test
    atomic.require_writable(folder.scorecard, "scoring again rewrites it: copy the run folder somewhere you can write")
    training_facts = _training_facts(folder.scorecard)  # read first: a damaged file must not waste the scoring
    loaded = load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device)
    recipe = fitted_to_model(recipe, loaded, on_event)
    autocast = compute_dtype(recipe, loaded)
    base = score_base(recipe, loaded, test, autocast, on_event)
    on_event("phase", {"text": f"scoring the tuned model from {artifact}"})
    tuned_model, loaded = load_tuned(run, loaded)
    scorecard = score_tuned(recipe, tuned_model, loaded, test, base, autocast, method.supports_packing, on_event)
    scorecard.update(training_facts)
    atomic.write_json(folder.scorecard, scorecard)
    return scorecard


def _training_facts(path: Path) -> dict[str, Any]:
    """What only training knows (best step, why it stopped), kept from the run's scorecard."""
    saved = read_saved_object(path, "scoring again keeps its best step and stop reason; restore it, or delete it "
                                    "to score without them") or {}  # fmt: skip
    return {k: saved[k] for k in ("best_step", "stopped_early", "stop_reason") if k in saved}
