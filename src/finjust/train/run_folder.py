"""The paths inside a run folder, in one place."""

from __future__ import annotations

from pathlib import Path

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

    def require(self) -> RunFolder:
        """This folder, where it holds a run (a ``recipe.yaml``).

        Raises:
            CheckpointError: no such folder, or one that no ``finjust train`` wrote.
        """
        if not self.root.exists():
            raise CheckpointError(f"{self.root} does not exist: give the folder `finjust train` wrote "
                                  "(output.dir, runs/NAME by default)")  # fmt: skip
        if not self.recipe.is_file():
            raise CheckpointError(f"{self.root} is not a finjust run folder (no recipe.yaml)")
        return self

    def artifact(self, method: Method) -> Path:
        return self.root / method.artifact_dir

    def task(self) -> str | None:
        """The task its data held (``chat``, ``classification``, ...), from the manifest; None before one."""
        if not self.manifest.is_file():
            return None
        return read_manifest(self.manifest, why="it records what task the run's data held").get("task")
