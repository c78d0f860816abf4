"""What a resumed run must find as the interrupted one left it: its recipe, its data, its files.

A resume continues weights, optimizer and data order from a checkpoint. If ``recipe.yaml``
was edited in between (another learning rate, more epochs, another LoRA rank), the result
would match neither recipe, and the base model's scores (kept in ``base_scores.json``) were
taken under the old evaluation settings. So the run's manifest records the recipe it started
with, beside the data's hashes, and a resume that finds either changed is refused, naming
what changed. Only how long to train and how to run (threads, compiling) may change: a run
extended from 4 to 6 steps continues (as the Trainer's resume does), and says so; and where
the data files and the base model lie, as their content is checked instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finjust.data.report import SPLITS
from finjust.errors import CheckpointError
from finjust.recipe import Recipe
from finjust.recipe.save import recipe_to_dict
from finjust.train.saved_json import read_saved_object

#: the manifest's entry holding the recipe a run started with
RECIPE_KEY = "recipe"
#: recipe sections a resume may change: ``output`` says where the run is, not what it does
#: (``--resume`` points it at the folder given, wherever the run was started)
FREE_SECTIONS = ("output",)
#: fields a resume may change (reported): how long to train, and how to run. A longer run's
#: learning-rate schedule is planned over its new length from the checkpoint on
CONTINUABLE = frozenset({"train.max_steps", "train.epochs", "train.patience", "train.threads", "train.compile"})
#: fields a resume may change silently: where the data lies (a project moved or copied), its
#: content checked by the manifest's hashes instead
LOCATIONS = frozenset({"data.train", "data.validation", "data.test"})
#: the manifest's entry identifying the base model's weights (:func:`model_fingerprint`): with
#: it, ``model.name`` may change too where it names the same weights at another path
MODEL_KEY = "model_fingerprint"


def started_with(recipe: Recipe) -> dict[str, Any]:
    """The part of ``recipe`` a resumed run must share, as JSON data."""
    plain = {name: section for name, section in recipe_to_dict(recipe).items() if name not in FREE_SECTIONS}
    return json.loads(json.dumps(plain))


#: why a resume needs the manifest, for :func:`read_manifest`'s refusals
RESUME_NEEDS = "it records the data and recipe the run started with, so a resume cannot check them"


def read_manifest(path: Path, why: str = RESUME_NEEDS) -> dict[str, Any]:
    """A run's manifest.json, or a CheckpointError naming it, ``why`` the reader needs it, and what to do."""
    advice = f"{why}; restore it or start a new run"
    saved = read_saved_object(path, advice)
    if saved is None:
        raise CheckpointError(f"{path} is missing: {advice}")
    hashes = saved.get("sha256")
    if not isinstance(hashes, dict) or not all(isinstance(hashes.get(split), str) for split in SPLITS):
        raise CheckpointError(f"{path} is not a run manifest (no sha256 of the splits): {advice}")
    recorded = saved.get(RECIPE_KEY, {})
    if not isinstance(recorded, dict) or not all(isinstance(section, dict) for section in recorded.values()):
        raise CheckpointError(f"{path}: its {RECIPE_KEY!r} is not a recipe: {advice}")
    return saved


def check_same_start(
    manifest_path: Path, saved: Mapping[str, Any], recipe: Recipe, data_manifest: Mapping[str, Any]
) -> list[str]:
    """Refuse a resume whose recipe or data differ from what the run started with (``saved``:
    its manifest, :func:`read_manifest`), but for :data:`CONTINUABLE` fields, whose changes it
    returns (``train.max_steps: 4 -> 6``)."""
    recipe_file = manifest_path.parent / "recipe.yaml"
    # runs started before the recipe was recorded are checked on their data only
    changes = changed_fields(saved[RECIPE_KEY], started_with(recipe)) if RECIPE_KEY in saved else {}
    # the model's fingerprint read only when its path changed (a GGUF's is a hash of the file)
    moved = LOCATIONS | ({"model.name"} if "model.name" in changes and _same_model(saved, recipe) else set())
    changes = {field: change for field, change in changes.items() if field not in moved}
    refused = [f"{field}: {change}" for field, change in changes.items() if field not in CONTINUABLE]
    if refused:
        raise CheckpointError(
            f"{recipe_file} changed since the run started ({'; '.join(refused)}): a resumed run continues with "
            f"the recipe it started with (only {', '.join(sorted(CONTINUABLE))} may change); undo the edit, or "
            "start a new run with the new recipe"
        )
    if saved["sha256"] != data_manifest["sha256"]:
        now = data_manifest["sha256"]
        changed = sorted(name for name in now if saved["sha256"].get(name) != now[name])
        raise CheckpointError(f"the data changed since {manifest_path.parent} started (the {', '.join(changed)} "
                              f"split(s) no longer match its manifest{changed_files(saved, data_manifest)}); "
                              "restore the data or start a new run")  # fmt: skip
    return [f"{field}: {change}" for field, change in changes.items()]


def _same_model(saved: Mapping[str, Any], recipe: Recipe) -> bool:
    """True where the recipe's model has the weights the run started on (runs started before the
    fingerprint was recorded cannot tell: their model.name must stay)."""
    # imported here: the run folder's checks come with `finjust train --help`, which needs no transformers
    from finjust.models.load import model_fingerprint

    return isinstance(saved.get(MODEL_KEY), str) and saved[MODEL_KEY] == model_fingerprint(recipe.model.name)


def changed_files(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """For a refusal: '; changed: FILE, ...', the data files whose content differs from the
    manifest's hashes; where none does, that finjust reads the same files differently now ('' where
    the files are others)."""
    recorded, current = saved.get("sources"), now.get("sources")
    if not isinstance(recorded, dict) or not isinstance(current, dict) or len(recorded) != len(current):
        return ""
    # matched by position, as the recipe lists them: a project moved elsewhere gives other paths
    differing = [path for (path, digest), old in zip(current.items(), recorded.values()) if digest != old]
    if differing:
        return f"; changed: {', '.join(differing)}"
    return ("; yet every data file is as it was: this finjust version reads them differently from the one the run "
            "started with (since 2026-11-28: .txt line breaks and suffixes in any case, CSV column names "
            "without surrounding spaces), so the splits differ; use that version for this run")  # fmt: skip


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, str]:
    """``{"section.key": "old -> new"}`` for every recipe field whose value differs.

    Fields only one side has are not compared: a recipe always holds every field (defaults
    filled in), so those are fields a finjust upgrade added or removed since the run started.
    A field's value is compared whole, mappings too (``eval.metric_options``: an entry added
    is a change).
    """
    changes = {}
    for section in sorted(set(old) & set(new)):
        for key in sorted(set(old[section]) & set(new[section])):
            if old[section][key] != new[section][key]:
                changes[f"{section}.{key}"] = f"{json.dumps(old[section][key])} -> {json.dumps(new[section][key])}"
    return changes
