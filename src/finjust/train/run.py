"""A whole run: recipe → data (checked, split, recorded) → the objective's trainer → scorecard.

The run folder (:mod:`finjust.train.run_folder`) holds everything a later step needs: the
resolved recipe, the split manifest, the metrics log, checkpoints, the trained artifact and
the scorecard. The trainers (:mod:`finjust.train.sft`, :mod:`finjust.train.classify`) share
what is here: the dtypes, the test split and the base scores an interrupted run kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finjust import allocator, atomic
from finjust.data.check import check_data, require_readable, source_paths, unreadable_sources
from finjust.data.example import Example
from finjust.data.gate import enforce_gate
from finjust.data.prepare import PreparedData, prepare_data
from finjust.errors import CheckpointError, FinjustError, ModelLoadError, RecipeError
from finjust.eval.scorecard import ModelScores, check_metric_inputs
from finjust.events import EventHandler, ignore_events
from finjust.folder_lock import folder_lock
from finjust.methods.registry import Method, get_method
from finjust.models.load import LoadedModel, load_tokenizer, locate_model, model_fingerprint, resolve_model_folder
from finjust.objectives.registry import objective_for_task
from finjust.recipe import Recipe, save_recipe, with_absolute_paths
from finjust.train import replace_run
from finjust.train.checkpoint import has_checkpoint
from finjust.train.resume_checks import MODEL_KEY, RECIPE_KEY, check_same_start, read_manifest, started_with
from finjust.train.run_folder import RunFolder
from finjust.train.saved_json import read_saved_object


@dataclass
class RunResult:
    """What a finished run leaves: its folder and the scorecard (as ``scorecard.json`` holds it)."""

    run_dir: Path
    scorecard: dict[str, Any]


def training_dtype(recipe: Recipe, method: Method) -> str:
    """Methods that train the pretrained weights keep fp32 masters; the others load as chosen."""
    return "float32" if method.trains_base_weights else recipe.model.dtype


def compute_dtype(recipe: Recipe, loaded: LoadedModel) -> torch.dtype | None:
    """The autocast dtype: bf16 where the hardware has it, else none (plain fp32)."""
    from finjust.models.load import choose_dtype

    return torch.bfloat16 if choose_dtype(recipe.model.dtype, loaded.device) == torch.bfloat16 else None


@dataclass
class RunContext:
    """What an objective's trainer gets: the recipe, its folder and method, the checked splits."""

    recipe: Recipe
    folder: RunFolder
    method: Method
    data: PreparedData
    resume: bool
    on_event: EventHandler


def run_recipe(recipe: Recipe, resume: bool = False, on_event: EventHandler = ignore_events) -> RunResult:
    """Train as the recipe says and score the result; ``resume`` continues an interrupted run.

    The data's task picks the objective (conversations and text: SFT; text/label records:
    classification), whose trainer does the rest and returns the scorecard.

    Args:
        recipe: from :func:`finjust.load_recipe` or :func:`finjust.recipe_from_dict`.
        resume: continue the run in ``recipe.output.dir`` from its last checkpoint.
        on_event: called ``(kind, payload)`` with progress, as the README's "Python API" lists;
            nothing is printed.

    Raises:
        FinjustError: a subclass naming what to fix: RecipeError, DataError (bad or missing
            data, or the quality gate), ModelLoadError, MethodError, CheckpointError (the run
            folder: exists, is not a run, changed since, or damaged), FolderBusyError (another
            process writes the folder), CompileError.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"run_recipe takes a Recipe (from load_recipe or recipe_from_dict), not "
                        f"{type(recipe).__name__}")  # fmt: skip
    # a recipe built in Python may hold paths relative to the current folder, which its saved
    # recipe.yaml, read from the run folder by eval, export and --resume, would miss
    recipe = with_absolute_paths(recipe)
    root = Path(recipe.output.dir)
    # a symlinked output.dir: the run, its lock and an overwrite's move aside are the folder it
    # points to (moving the link aside would change which lock a second process takes)
    folder = RunFolder(root.resolve() if root.is_symlink() else root)
    _require_inputs(recipe)
    _require_own_folder(folder, recipe)
    if (blocker := atomic.file_in_the_way(folder.root)) is not None:
        raise CheckpointError(f"output.dir {folder.root}: {blocker} is a file, not a folder; choose another output.dir")
    with folder_lock(folder.root):
        replace_run.recover(folder.root)  # under the lock: the run aside may be another process's to bring back
        replacing = _prepare_folder(folder, recipe, resume)
        try:
            scorecard = _train_and_score(recipe, folder, resume, on_event)
        except BaseException as error:
            if replacing and replace_run.roll_back(folder.root, folder.checkpoints):
                on_event("warning", {"text": f"the new run stopped before its first checkpoint: {folder.root} "
                                     "holds the previous run again"})  # fmt: skip
            elif isinstance(error, FinjustError) and not has_checkpoint(folder.checkpoints):
                again = ("the same command starts it again" if folder.computed_nothing()
                         else "start again with output.overwrite=true")  # fmt: skip
                on_event("warning", {"text": f"the run stopped before its first checkpoint; {folder.root} keeps "
                                     f"what it wrote: once the cause is fixed, {again}"})  # fmt: skip
            raise
        replace_run.discard_old(folder.root)
    return RunResult(folder.root, scorecard)


def _require_inputs(recipe: Recipe) -> None:
    """The model and the data the run reads exist, checked before its folder is made (or the fixed
    rerun meets a folder to overwrite); a missing model and missing data are reported together.

    Raises:
        ModelLoadError: only the model is missing; DataError: only data; RecipeError: both, each a problem.
    """
    try:
        locate_model(recipe.model.name)
    except ModelLoadError as error:
        if missing := unreadable_sources(recipe.data):
            raise RecipeError([str(error), *map(str, missing)]) from error
        raise
    require_readable(recipe.data)


def _require_own_folder(folder: RunFolder, recipe: Recipe) -> None:
    """The run folder holds none of the run's data: output.overwrite replaces it whole, and a
    finished run deletes the folder it replaced.

    Raises:
        RecipeError: a data source lies inside output.dir (or is it).
    """
    root = folder.root.resolve()
    inside = [path for path in source_paths(recipe.data) if path.resolve().is_relative_to(root)]
    if inside:
        raise RecipeError([f"output.dir {folder.root} holds the run's data ({', '.join(map(str, inside))}); a run "
                           "folder is the run's own, replaced whole by output.overwrite: choose another output.dir, "
                           "e.g. runs/NAME"])  # fmt: skip


def _train_and_score(recipe: Recipe, folder: RunFolder, resume: bool, on_event: EventHandler) -> dict[str, Any]:
    with _threads(recipe.train.threads):
        return _train_and_score_now(recipe, folder, resume, on_event)


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads at ``count`` while inside (the recipe's ``train.threads``; None
    keeps torch's), the caller's setting again after: a run is not to change its process's."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_and_score_now(recipe: Recipe, folder: RunFolder, resume: bool, on_event: EventHandler) -> dict[str, Any]:
    on_event("phase", {"text": allocator.describe()})
    method = get_method(recipe.method.name)
    data, resumed_with = _prepare_checked_data(recipe, folder, resume, on_event)
    objective = objective_for_task(data.task)
    _quality_gate(recipe, folder, on_event, chat=objective.needs_chat_template)
    on_event("phase", {"text": f"data: {data.manifest['sizes']}; objective: {objective.name}"})
    scorecard = objective.train_function()(RunContext(recipe, folder, method, data, resume, on_event))
    if resumed_with is not None:  # recorded once the resume trained: the loop may still refuse one
        atomic.write_json(folder.manifest, resumed_with)
    atomic.write_json(folder.scorecard, scorecard)
    return scorecard


def _prepare_folder(folder: RunFolder, recipe: Recipe, resume: bool) -> bool:
    """Make the run folder ready; True when an old run was set aside for this one to replace."""
    _recover_writes(folder)
    replacing = False
    if not resume and folder.root.is_dir() and folder.computed_nothing():
        atomic.remove_folder(folder.root)  # a run that stopped before computing anything: nothing is lost
    if folder.root.exists() and any(entry != folder.mark for entry in folder.root.iterdir()) and not resume:
        if not recipe.output.overwrite:
            raise CheckpointError(_exists_message(folder))
        if not folder.holds_run():  # overwrite replaces runs, never a folder of other files
            raise CheckpointError(f"{folder.root} is not empty and not a finjust run folder (a project's own "
                                  "recipe.yaml does not make one); output.overwrite replaces run folders only: "
                                  "choose another output.dir, e.g. runs/NAME")  # fmt: skip
        replace_run.set_aside(folder.root, finished=folder.scorecard.is_file())
        replacing = True
    if resume:
        folder.require()
    folder.make()
    if not resume:
        save_recipe(recipe, folder.recipe)
    return replacing


def _exists_message(folder: RunFolder) -> str:
    exists = f"run folder {folder.root} already exists"
    finished_or_resumable = folder.scorecard.is_file() or has_checkpoint(folder.checkpoints)
    if not folder.holds_run():
        return (f"{exists} and is not a finjust run folder (a project's own recipe.yaml does not make one): choose "
                "another output.dir, e.g. runs/NAME")  # fmt: skip
    if folder.recipe.is_file() and not finished_or_resumable:
        # e.g. a method option refused after the base was scored: --resume would repeat its recipe
        return (f"{exists} and holds a run that stopped before its first checkpoint, so nothing trained is lost "
                "by starting again: set output.overwrite=true (or choose another output.dir); `finjust train "
                f"--resume {folder.root}` retries it with the recipe it recorded")  # fmt: skip
    return (f"{exists}; continue it with `finjust train --resume {folder.root}` (from Python: run_recipe(..., "
            "resume=True)), choose another output.dir, or set output.overwrite=true")  # fmt: skip


def _recover_writes(folder: RunFolder) -> None:
    """Tidy what a run killed while writing left in its folder (temp files and folders, an
    artifact moved aside while its replacement was renamed in): in a run folder, or in one
    holding nothing else (a run killed while writing its first file)."""
    if not folder.root.is_dir():
        return
    entries = list(folder.root.iterdir())
    if folder.holds_run() or all(atomic.is_leftover(entry) for entry in entries):
        atomic.recover(folder.root)


def _quality_gate(recipe: Recipe, folder: RunFolder, on_event: EventHandler, chat: bool = True) -> None:
    """``finjust data check`` before training: failing findings stop the run, the others warn."""
    tokenizer = load_tokenizer(resolve_model_folder(recipe.model.name), chat=chat)
    report = check_data(recipe.data, recipe.train.seed, tokenizer, tokenizer_name=recipe.model.name)
    atomic.write_json(folder.root / "data_report.json", report.to_dict())
    enforce_gate(report, str(folder.recipe))
    for finding in report.warnings():
        on_event("warning", {"text": f"data: {finding.count} {finding.name}, e.g. {finding.items[0]} "
                 f"(all in {folder.root / 'data_report.json'})"})  # fmt: skip


def _prepare_checked_data(
    recipe: Recipe, folder: RunFolder, resume: bool, on_event: EventHandler
) -> tuple[PreparedData, dict[str, Any] | None]:
    """Split the data; a resumed run must see exactly the data the interrupted one saw. Returns
    the data, and the manifest to record once a resume with a changed recipe has trained."""
    data = prepare_data(recipe.data, recipe.train.seed)
    # a run killed before its manifest was written had no checkpoint either: it starts over
    if resume and (folder.manifest.is_file() or has_checkpoint(folder.checkpoints)):
        saved = read_manifest(folder.manifest)
        if changes := check_same_start(folder.manifest, saved, recipe, data.manifest):
            on_event("warning", {"text": f"resuming with {'; '.join(changes)} (recipe.yaml changed since the run "
                                 "started)"})  # fmt: skip
            return data, {**saved, RECIPE_KEY: started_with(recipe)}
    else:
        atomic.write_json(folder.manifest, {**data.manifest, RECIPE_KEY: started_with(recipe),
                                            MODEL_KEY: model_fingerprint(recipe.model.name)})  # fmt: skip
    return data, None


def test_examples(recipe: Recipe, data: PreparedData, max_examples: int | None = None) -> list[Example]:
    """The test examples the scorecard scores (the first ``max_examples``, default the recipe's
    ``eval.max_examples``), checked for what its metrics read of them.

    Raises:
        EvaluationError: a metric needs a record field that some of them lack.
    """
    test = data.splits.test
    limit = max_examples or recipe.eval.max_examples
    test = test[:limit] if limit else test
    check_metric_inputs(recipe.eval, test)
    return test


def base_scores_once(folder: RunFolder, test: Sequence[Example], score: Callable[[], ModelScores]) -> ModelScores:
    """The base model's scores on ``test``: those an interrupted run saved (:func:`saved_base_scores`),
    else ``score()``'s, kept for a resume."""
    if (saved := saved_base_scores(folder, test)) is not None:
        return saved
    scores = score()
    save_base_scores(folder, scores, test)
    return scores


def save_base_scores(folder: RunFolder, scores: ModelScores, test: Sequence[Example]) -> None:
    """Keep the base model's scores for a resumed run, with what they were scored on."""
    atomic.write_json(folder.base_scores, {**scores.to_json(), _INPUTS_KEY: _scored_inputs_sha256(test)})


def saved_base_scores(folder: RunFolder, test: Sequence[Example]) -> ModelScores | None:
    """The base scores an interrupted run saved for these ``test`` examples; None before it saved
    them, or where the examples changed since in a field the split hashes leave out (a resumed
    run would compare the tuned model's scores on the new ``facts`` with the base's on the old).

    Raises:
        CheckpointError: the file is damaged or holds scores of another test split.
    """
    advice = "delete it and resume: the base model is scored again"
    if (saved := read_saved_object(folder.base_scores, advice)) is None:
        return None
    scored_on = saved.get(_INPUTS_KEY)
    if scored_on is not None and scored_on != _scored_inputs_sha256(test):  # None: a run from before the hash
        return None
    try:
        scores = ModelScores.from_json(saved)
        _require_scores_of(scores, len(test))
        return scores
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{folder.base_scores} is damaged ({type(exc).__name__}: {exc}); {advice}") from exc


_INPUTS_KEY = "inputs_sha256"


def _scored_inputs_sha256(test: Sequence[Example]) -> str:
    """A hash of the test examples with every field a metric may read: the split hashes cover
    messages and labels only (``Example.canonical_json``), not fields such as ``facts``."""
    digest = hashlib.sha256()
    for example in test:
        fields = json.dumps(example.meta, sort_keys=True, ensure_ascii=False, default=str)
        digest.update(f"{example.canonical_json()}\t{fields}\n".encode())
    return digest.hexdigest()


def _require_scores_of(scores: ModelScores, examples: int) -> None:
    """Saved base scores must hold every metric's item for each test example (else the scorecard
    would compare the tuned model with nothing)."""
    if not scores.items or any(len(items) != examples for items in scores.items.values()):
        counts = {name: len(items) for name, items in scores.items.items()}
        raise ValueError(f"it holds items {counts or 'for no metric'}, where each metric needs {examples}")


