"""A run killed with SIGKILL resumes from its last checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from finjust.cli.main import main
from finjust.train.checkpoint import latest_checkpoint

STEPS = 300
SETTINGS = [f"train.max_steps={STEPS}", "train.save_every=10", "train.eval_every=50", "train.patience=null",
            "eval.generate=false"]  # fmt: skip


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    folder = latest_checkpoint(run / "checkpoints")
    assert folder is not None and folder.name == f"step-{STEPS:06d}"
    return load_file(str(folder / "trainable.safetensors"))


def _start_and_kill(recipe: Path, run: Path, at_step: int, environment: dict[str, str]) -> int:
    """Start a training process, SIGKILL it once a checkpoint at ``at_step`` or later exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "finjust", "train", str(recipe), *SETTINGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**environment, "PYTHONHASHSEED": "0"},
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            folder = latest_checkpoint(run / "checkpoints") if (run / "checkpoints").is_dir() else None
            if folder is not None and int(folder.name.split("-")[1]) >= at_step:
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    folder = latest_checkpoint(run / "checkpoints")
    assert folder is not None, "the run was killed before its first checkpoint"
    return int(folder.name.split("-")[1])


def test_sigkilled_run_resumes_to_the_same_end(tiny_recipe, tmp_path, child_environment):
    recipe = tiny_recipe(method={"name": "full"}, train={"lr": 1e-3})
    reference = tmp_path / "reference"
    assert main(["train", str(recipe), *SETTINGS, f"output.dir={reference}"]) == 0

    run = tmp_path / "run"
    killed_at = _start_and_kill(recipe, run, at_step=30, environment=child_environment)
    assert killed_at < STEPS, "the run finished before it could be killed"
    assert not (run / "scorecard.json").exists()

    assert main(["train", "--resume", str(run)]) == 0
    expected, resumed = _final_weights(reference), _final_weights(run)
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6)
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"type": "train"' in line]
    assert len(steps) == STEPS, "the metrics log holds each step exactly once"
