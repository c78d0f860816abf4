"""Where a training step's time goes: torch's profiler over a few steps of one train_speed variant.

    python benchmarks/profile_steps.py finjust [--device cuda] [--model FOLDER] [--steps 4] [--out table.txt]

Prints (or writes) the ops and kernels by device time (CPU time on a CPU), the whole run
profiled (loading the model too: read the per-step figures off the step count). On a GPU,
the self CUDA total against the steps' wall time says how much of a step the GPU worked.
"""

from __future__ import annotations

import argparse
import sys

import finjust  # noqa: F401  (first: it drops other packages' known log noise, see finjust.third_party_logs)

# isort: split
# import what the run needs before profiling starts: transformers' lazy imports of torch._dynamo
# and of the Trainer fail when they first happen under the profiler
import peft  # noqa: F401
import train_speed
from torch.profiler import ProfilerActivity, profile
from transformers import Trainer  # noqa: F401

import finjust.methods  # noqa: F401
import finjust.train.loop  # noqa: F401
from finjust import atomic
from finjust.cli.arguments import non_negative_int, output_file, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=("a", "b", "finjust"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", default=train_speed.SHIPPED)
    parser.add_argument("--steps", type=positive_int, default=4)
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--rows", type=positive_int, default=30, help="rows of the table")
    parser.add_argument("--out", metavar="PATH", type=output_file)
    args = parser.parse_args(argv)
    bench = train_speed.Bench(args.steps, args.warmup, args.device, args.model)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as profiled:
        if args.variant == "finjust":
            result = train_speed.run_finjust(bench, compile_=False)
        else:
            result = train_speed.run_trainer(args.variant, bench)
    key = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    table = profiled.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60)
    text = (f"{args.variant}: {args.warmup + args.steps} steps, the last {args.steps} at "
            f"{result['seconds_per_step']:.4f} s a step (profiled)\n{table}\n")  # fmt: skip
    if args.out:
        atomic.write_text(args.out, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
