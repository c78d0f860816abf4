"""Evaluation speed: the scorecard's batched generation against one question at a time.

Greedy answers from the shipped SmolLM2-135M (bf16 where the CPU has it) to the first N demo
test questions, both ways, in one run; prints answers per second and the ratio. Run it on
an otherwise idle machine.

    python benchmarks/eval_speed.py [--questions 16] [--max-new-tokens 64] [--batch-size 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from finjust.data.formats import load_examples
from finjust.data.templates import prompt_ids
from finjust.eval.generate import generate_answers
from finjust.models import load_model

TEST = Path(__file__).resolve().parent.parent / "src" / "finjust" / "demo" / "data" / "test.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    loaded = load_model("smollm2-135m-instruct")
    autocast = torch.bfloat16 if loaded.dtype == torch.bfloat16 else None
    prompts = [prompt_ids(loaded.tokenizer, e) for e in load_examples(TEST)[: args.questions]]

    def answers_per_second(batch_size: int) -> float:
        started = time.perf_counter()
        generate_answers(loaded.model, loaded.tokenizer, prompts, args.max_new_tokens, batch_size,
                         loaded.device, autocast)  # fmt: skip
        return len(prompts) / (time.perf_counter() - started)

    answers_per_second(args.batch_size)  # warm-up
    batched, single = answers_per_second(args.batch_size), answers_per_second(1)
    result = {"questions": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "batched_answers_per_second": batched, "single_answers_per_second": single,
              "batched_over_single": batched / single}  # fmt: skip
    print(f"batched ({args.batch_size} at a time): {batched:.2f} answers/s; one at a time: {single:.2f} answers/s; "
          f"ratio {batched / single:.2f}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
