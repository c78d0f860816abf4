"""The paths inside a run folder, in one place."""

from __future__ import annotations

import json
from pathlib import Path

from finjust import atomic
from finjust.errors import CheckpointError
from finjust.methods.registry import Method
from finjust.train.resume_checks import read_manifest


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
        # what tells a run folder from a user's folder that holds a recipe.yaml of its own (a
        # project with output.dir: .), which output.overwrite would replace whole: not in the
        # recipe, which users copy to start a project from
        self.mark = self.root / ".finjust-run"

    def holds_run(self) -> bool:
        """Whether ``finjust train`` made this folder: its mark, or (a run started before
        2026-11-27) a recipe.yaml beside the files a run writes first."""
        if self.mark.is_file():
            return True
        # not data_report.json: `finjust data check --json` writes one into a user's project too
        written = self.metrics.exists() or self.checkpoints.exists() or self.scorecard.exists() or self._manifest()
        return self.recipe.is_file() and written

    def _manifest(self) -> bool:
        """Whether a finjust manifest lies here (its split hashes and sizes), not a file of the name."""
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(manifest, dict) and {"sizes", "sha256", "recipe"} <= manifest.keys()

    def computed_nothing(self) -> bool:
        """Whether this run stopped before it scored or trained anything (its data refused, a
        model that would not load): it holds its mark, recipe, manifest and data report only,
        which starting it again writes anew."""
        first = {self.mark.name, self.recipe.name, self.manifest.name, "data_report.json"}
        # the mark itself, not the older runs' rule: a project's recipe.yaml beside its own
        # data_report.json (`finjust data check --json`) matches that one
        return self.mark.is_file() and all(e.name in first or atomic.is_leftover(e) for e in self.root.iterdir())

    def make(self) -> None:
        """Create the folder with its mark."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.mark.is_file():
            atomic.write_text(self.mark, "a run folder of finjust train: output.overwrite replaces it whole\n")

    def require(self) -> RunFolder:
        """This folder, where it holds a run (a ``recipe.yaml``).

        Raises:
            CheckpointError: no such folder, or one that no ``finjust train`` wrote.
        """
        if not self.root.exists():
            raise CheckpointError(f"{self.root} does not exist: give the folder `finjust train` wrote "
                                  "(its recipe's output.dir)")  # fmt: skip
        if not self.holds_run() or not self.recipe.is_file():
            raise CheckpointError(f"{self.root} is not a finjust run folder (no recipe.yaml written by finjust train)")
        return self

    def artifact(self, method: Method) -> Path:
        return self.root / method.artifact_dir

    def retire_finished(self, method: Method) -> None:
        """Remove what the run finished with (``method``'s artifact, then the scorecard and any
        comparison) before a resume trains on: an interrupted extension must look unfinished,
        not pass the old weights off as its own. The artifact goes first: a kill between the two leaves a
        scorecard that names its artifact missing, never weights that no scorecard describes."""
        if self.artifact(method).is_dir():
            atomic.remove_folder(self.artifact(method))
        self.scorecard.unlink(missing_ok=True)
        self.compare.unlink(missing_ok=True)  # the old weights' comparison: the report showed it as the new's

    def trained_artifact(self, method: Method) -> Path:
        """``method``'s trained artifact in this run.

        Raises:
            CheckpointError: it is missing: the run has not finished, or the folder was deleted.
        """
        artifact = self.artifact(method)
        if artifact.is_dir():
            return artifact
        if self.scorecard.is_file():
            raise CheckpointError(f"{artifact} is missing although the run finished (its scorecard.json is there): "
                                  "restore it, or train the run again")  # fmt: skip
        raise CheckpointError(f"{self.root} holds no trained {method.artifact_dir}/ folder yet: the run has not "
                              f"finished; continue it with `finjust train --resume {self.root}`")  # fmt: skip

    def task(self) -> str | None:
        """The task its data held (``chat``, ``classification``, ...), from the manifest; None before one."""
        if not self.manifest.is_file():
            return None
        return read_manifest(self.manifest, why="it records what task the run's data held").get("task")
