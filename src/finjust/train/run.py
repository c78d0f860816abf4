"""A whole run: recipe → data → pretrained model → base score → training → scorecard.

The run folder holds everything a later step needs: the resolved recipe, the split
manifest, the metrics log, checkpoints, the trained artifact and the scorecard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finjust import allocator, atomic
from finjust.events import EventHandler, ignore_events
from finjust.folder_lock import folder_lock
from finjust.data.formats import Example
from finjust.data.check import check_data, require_readable
from finjust.data.gate import enforce_gate
from finjust.data.prepare import PreparedData, prepare_data, require_sft
from finjust.data.templates import TokenizedExample, prompt_ids, tokenize_examples
from finjust.errors import CheckpointError
from finjust.eval.forgetting import probe_model, replay_texts, retention, text_examples
from finjust.eval.scorecard import ModelScores, build_scorecard, score_model
from finjust.methods.preflight import check_method_fits
from finjust.methods.registry import Method, count_parameters, get_method
from finjust.models.load import LoadedModel, load_model, load_tokenizer, locate_model, resolve_model_folder
from finjust.objectives.registry import objective_for_task
from finjust.objectives.sft import eval_batches
from finjust.recipe import Recipe, save_recipe
from finjust.train import replace_run
from finjust.train.checkpoint import best_weights, restore_trainable
from finjust.train.context import answers_past_context, fitted_to_model
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model
from finjust.train.resume_checks import RECIPE_KEY, check_same_start, read_manifest, started_with
from finjust.train.saved_json import read_saved_object


@dataclass
class RunResult:
    """What a finished run leaves: its folder and the scorecard (as ``scorecard.json`` holds it)."""

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
        self.compare = self.root / "compare.json"  # finjust compare
        self.report = self.root / "report.html"  # finjust report

    def artifact(self, method: Method) -> Path:
        return self.root / method.artifact_dir

    def task(self) -> str | None:
        """The task its data held (``chat``, ``classification``, ...), from the manifest; None before one."""
        if not self.manifest.is_file():
            return None
        return read_manifest(self.manifest, why="it records what task the run's data held").get("task")


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
    folder = RunFolder(recipe.output.dir)
    # what the run reads must exist before its folder is made, or the fixed rerun meets a folder to overwrite
    locate_model(recipe.model.name)
    require_readable(recipe.data)
    if (blocker := atomic.file_in_the_way(folder.root)) is not None:
        raise CheckpointError(f"output.dir {folder.root}: {blocker} is a file, not a folder; choose another output.dir")
    with folder_lock(folder.root):
        replace_run.recover(folder.root)  # under the lock: the run aside may be another process's to bring back
        replacing = _prepare_folder(folder, recipe, resume)
        try:
            scorecard = _train_and_score(recipe, folder, resume, on_event)
        except BaseException:
            if replacing and replace_run.roll_back(folder.root, folder.checkpoints):
                on_event("warning", {"text": f"the new run stopped before its first checkpoint: {folder.root} "
                                     "holds the previous run again"})  # fmt: skip
            raise
        replace_run.discard_old(folder.root)
    return RunResult(folder.root, scorecard)


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
    data = _prepare_checked_data(recipe, folder, resume, on_event)
    objective = objective_for_task(data.task)
    _quality_gate(recipe, folder, on_event, chat=objective.needs_chat_template)
    on_event("phase", {"text": f"data: {data.manifest['sizes']}; objective: {objective.name}"})
    scorecard = objective.train_function()(RunContext(recipe, folder, method, data, resume, on_event))
    atomic.write_json(folder.scorecard, scorecard)
    return scorecard


def train_sft(run: RunContext) -> dict[str, Any]:
    """Supervised fine-tuning of a causal LM; returns the scorecard (with retention when probed)."""
    recipe, folder, method, data, resume, on_event = (
        run.recipe, run.folder, run.method, run.data, run.resume, run.on_event
    )  # fmt: skip
    require_sft(data)
    on_event("phase", {"text": f"loading model {recipe.model.name}"})
    loaded = load_model(recipe.model.name, training_dtype(recipe, method), recipe.model.device)
    check_method_fits(method, recipe.method.options, loaded.model, loaded.dtype)
    recipe = fitted_to_model(recipe, loaded, on_event)
    autocast = compute_dtype(recipe, loaded)
    test = test_examples(recipe, data)
    base = _base_scores(recipe, loaded, test, folder, autocast, on_event)
    loaded = _training_model(recipe, method, loaded, on_event)
    torch.manual_seed(recipe.train.seed)  # adapters start from random weights: part of the seeded run
    model = method.apply(loaded.model, recipe.method.options)
    trainable, total = count_parameters(model)
    on_event("method", {"name": method.name, "trainable": trainable, "total": total})
    setup = _loop_setup(recipe, loaded, data, folder, autocast, on_event, packing=method.supports_packing)
    setup.retention_probe = _guard_probe(recipe, loaded, base, autocast, method.supports_packing)
    setup.recompute = method.supports_recompute
    state = train_model(model, setup, resume=resume)
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


def _prepare_folder(folder: RunFolder, recipe: Recipe, resume: bool) -> bool:
    """Make the run folder ready; True when an old run was set aside for this one to replace."""
    _recover_writes(folder)
    replacing = False
    if folder.root.exists() and any(folder.root.iterdir()) and not resume:
        if not recipe.output.overwrite:
            raise CheckpointError(_exists_message(folder))
        if not folder.recipe.is_file():  # overwrite replaces runs, never a folder of other files
            raise CheckpointError(f"{folder.root} is not empty and not a finjust run folder (no recipe.yaml); "
                                  "output.overwrite replaces run folders only: choose another output.dir")
        replace_run.set_aside(folder.root, finished=folder.scorecard.is_file())
        replacing = True
    if resume and not folder.recipe.is_file():
        raise CheckpointError(f"{folder.root} is not a finjust run folder (no recipe.yaml)")
    folder.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_recipe(recipe, folder.recipe)
    return replacing


def _exists_message(folder: RunFolder) -> str:
    exists = f"run folder {folder.root} already exists"
    finished_or_resumable = folder.scorecard.is_file() or replace_run.has_checkpoint(folder.checkpoints)
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
    if folder.recipe.is_file() or all(atomic.is_leftover(entry) for entry in entries):
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


def _prepare_checked_data(recipe: Recipe, folder: RunFolder, resume: bool, on_event: EventHandler) -> PreparedData:
    """Split the data; a resumed run must see exactly the data the interrupted one saw."""
    data = prepare_data(recipe.data, recipe.train.seed)
    # a run killed before its manifest was written had no checkpoint either: it starts over
    if resume and (folder.manifest.is_file() or replace_run.has_checkpoint(folder.checkpoints)):
        saved = read_manifest(folder.manifest)
        if changes := check_same_start(folder.manifest, saved, recipe, data.manifest):
            on_event("warning", {"text": f"resuming with {'; '.join(changes)} (recipe.yaml changed since the run "
                                 "started)"})  # fmt: skip
            atomic.write_json(folder.manifest, {**saved, RECIPE_KEY: started_with(recipe)})
    else:
        atomic.write_json(folder.manifest, {**data.manifest, RECIPE_KEY: started_with(recipe)})
    return data


def test_examples(recipe: Recipe, data: PreparedData) -> list[Example]:
    test = data.splits.test
    return test[: recipe.eval.max_examples] if recipe.eval.max_examples else test


def _base_scores(
    recipe: Recipe, loaded: LoadedModel, test: list[Example], folder: RunFolder,
    autocast: torch.dtype | None, on_event: EventHandler,
) -> ModelScores:  # fmt: skip
    """Score the pretrained model once; a resumed run reads the saved result."""
    if (saved := saved_base_scores(folder, len(test))) is not None:
        return saved
    scores = score_base(recipe, loaded, test, autocast, on_event)
    atomic.write_json(folder.base_scores, scores.to_json())
    return scores


def saved_base_scores(folder: RunFolder, examples: int) -> ModelScores | None:
    """The base scores an interrupted run saved (None before it saved them), for ``examples`` test examples.

    Raises:
        CheckpointError: the file is damaged or holds scores of another test split.
    """
    advice = "delete it and resume: the base model is scored again"
    if (saved := read_saved_object(folder.base_scores, advice)) is None:
        return None
    try:
        scores = ModelScores.from_json(saved)
        _require_scores_of(scores, examples)
        return scores
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{folder.base_scores} is damaged ({type(exc).__name__}: {exc}); {advice}") from exc


def _require_scores_of(scores: ModelScores, examples: int) -> None:
    """Saved base scores must hold every metric's item for each test example (else the scorecard
    would compare the tuned model with nothing)."""
    if not scores.items or any(len(items) != examples for items in scores.items.values()):
        counts = {name: len(items) for name, items in scores.items.items()}
        raise ValueError(f"it holds items {counts or 'for no metric'}, where each metric needs {examples}")


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
    validation, _ = tokenize_examples(data.splits.validation, loaded.tokenizer, recipe.data.max_length,
                                      recipe.data.too_long)  # fmt: skip
    if report.truncated or report.dropped_no_trainable_token or report.dropped_too_long:
        on_event("warning", {"text": f"{report.truncated} training examples truncated to data.max_length="
                 f"{recipe.data.max_length}; {report.dropped_no_trainable_token} dropped (no answer token left); "
                 f"{report.dropped_too_long} dropped as too long"})
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
