"""Every fine-tuning method on the shipped model and the demo data, under the same budget.

Each method runs `finjust train`'s work in a fresh process (so peak memory is its own), in
the memory allocator the `finjust` command runs in (tcmalloc where installed, see
finjust.allocator), with the same
steps, batch, data and seed, at the method's default learning rate and options (what
`method: {name: ...}` gets). One table: trainable parameters, peak RSS while training
(Linux: counted from the first step, after the base model was scored), real tokens per
second, seconds to the budget, size of what it saves, validation loss reached, and
held-out test metrics on the first test questions. Run it on an otherwise idle
machine: each method's figures are taken one after another, never side by side.

    python benchmarks/methods.py [--steps 30] [--test-questions 24] [--methods lora,full] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import DEMO_DATA, child_environment, memory_bytes, reset_peak_memory

from finjust import atomic
from finjust.cli.arguments import output_file, positive_int

#: the first steps carry one-off costs (allocations, lazy initialisation): not timed
WARMUP_STEPS = 2


def main(argv: list[str] | None = None) -> int:
    from finjust.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=30, help=f"optimizer steps per method (batch 8), > {WARMUP_STEPS}")
    parser.add_argument("--test-questions", type=positive_int, default=24, help="test questions scored per method")
    parser.add_argument("--methods", default=",".join(METHODS.names()), help="comma-separated method names")
    parser.add_argument("--json", metavar="PATH", type=output_file, help="write the figures as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} untimed warm-up steps")
    if args.child:
        print(json.dumps(run_method(args.child, args.steps, args.test_questions)))
        return 0
    results = {name: _in_child(name, args) for name in args.methods.split(",")}
    print(table(results, args.steps))
    if args.json:
        atomic.write_json(args.json, {"steps": args.steps, "methods": results})
    return 1 if any("error" in r for r in results.values()) else 0


def _in_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps),
               "--test-questions", str(args.test_questions)]  # fmt: skip
    # in the allocator the command relaunches itself in
    environment = child_environment(preload=True) or child_environment(preload=False)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_method(name: str, steps: int, test_questions: int) -> dict[str, Any]:
    """Train ``name`` for ``steps`` steps in this process and collect its figures."""
    out = Path(tempfile.mkdtemp(prefix=f"finjust-bench-{name}-"))
    try:
        return _run_in(out, name, steps, test_questions)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _run_in(out: Path, name: str, steps: int, test_questions: int) -> dict[str, Any]:
    from finjust.recipe import recipe_from_dict
    from finjust.train.run import run_recipe

    recipe = recipe_from_dict({
        "model": {"name": "smollm2-135m-instruct"},
        "data": {"train": str(DEMO_DATA / "train.jsonl"), "test": str(DEMO_DATA / "test.jsonl"), "validation_fraction": 0.1},
        "method": {"name": name},
        "train": {"max_steps": steps, "batch_size": 8, "eval_every": steps, "patience": None, "seed": 0},
        "eval": {"metrics": ["token_f1", "rouge_l"], "max_examples": test_questions, "retention": False},
        "output": {"dir": str(out / "run")},
    })  # fmt: skip
    events: dict[str, list[dict[str, Any]]] = {}
    training_peak = [0.0]

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        events.setdefault(kind, []).append(payload)
        if kind == "start":  # scoring the base came first: count from here
            reset_peak_memory()
        elif kind in ("step", "eval"):
            training_peak[0] = memory_bytes("VmHWM") / 1e9

    result = run_recipe(recipe, on_event=on_event)
    return _figures(name, result, events, training_peak[0])


def _figures(name: str, result: Any, events: dict[str, list[dict[str, Any]]], peak_gb: float) -> dict[str, Any]:
    """The row of the table: what the run saved and its events say, with the training peak."""
    from finjust.methods import get_method
    from finjust.train.run_folder import RunFolder

    timed = events["step"][WARMUP_STEPS:]
    artifact = RunFolder(result.run_dir).artifact(get_method(name))
    base, tuned = result.scorecard["base"], result.scorecard["tuned"]
    return {
        "trainable": events["method"][0]["trainable"], "total": events["method"][0]["total"],
        "peak_rss_gb": peak_gb,
        "tokens_per_second": sum(r["tokens"] for r in timed) / sum(r["seconds"] for r in timed),
        "train_seconds": sum(r["seconds"] for r in events["step"]),
        "saved_mb": sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file()) / 1e6,
        "val_loss": events["eval"][-1]["val_loss"],
        **{f"test_{key}": tuned[key] for key in ("test_loss", "token_f1", "rouge_l")},
        **{f"base_{key}": base[key] for key in ("test_loss", "token_f1")},
    }  # fmt: skip


def table(results: dict[str, dict[str, Any]], steps: int) -> str:
    header = (f"{'method':14} {'trainable':>12} {'share':>7} {'peak RSS':>9} {'tok/s':>7} {'time s':>7} "
              f"{'saved MB':>9} {'val loss':>9} {'test loss':>9} {'token F1':>8} {'ROUGE-L':>8}")  # fmt: skip
    lines = [f"{steps} steps of 8 demo examples per method (base: test loss / token F1 in the last line)", header]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:14} failed: {r['error']}")
            continue
        lines.append(
            f"{name:14} {r['trainable']:>12,} {r['trainable'] / r['total']:>7.2%} {r['peak_rss_gb']:>7.2f}GB "
            f"{r['tokens_per_second']:>7.0f} {r['train_seconds']:>7.0f} {r['saved_mb']:>9.1f} {r['val_loss']:>9.3f} "
            f"{r['test_test_loss']:>9.3f} {r['test_token_f1']:>8.3f} {r['test_rouge_l']:>8.3f}"
        )  # fmt: skip
    base = next((r for r in results.values() if "error" not in r), None)
    if base:
        lines.append(f"{'base model':14} test loss {base['base_test_loss']:.3f}, token F1 {base['base_token_f1']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
