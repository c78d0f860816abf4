"""Evaluation speed: the scorecard's batched generation against one question at a time.

Greedy answers from the shipped SmolLM2-135M (bf16 where the CPU has it) to the first N demo
test questions, both ways, in one run, each after a warm-up; prints answers per second and
the ratio, answer tokens per second, and how many answers came out identical. In bf16 they
need not all be: a left-padded batch runs other matmul shapes than one prompt alone, so the
rounding differs and a greedy answer can take another token at a near-tie (in fp32 they
agree). A batch decodes until its longest answer ends, so it does at least the work of one
at a time. Run it on an otherwise idle machine.

``--lora`` generates through a LoRA adapter (r=16 on every linear layer, as the demo trains), as
the scorecard answers with a tuned run: merged into a copy of the weights for the generation, as
the scorecard does (``finjust.eval.generate.merged_for_generation``); ``--unmerged`` keeps peft's
unmerged layers, whose extra matmuls run at every token (what the scorecard did before). Its B
matrices start at zero, so the answers are the base model's either way. ``--rounds N`` times both
ways N times in turn and reports the median of each (a shared machine's speed wanders).

    python benchmarks/eval_speed.py [--questions 16] [--max-new-tokens 96] [--batch-size 16] [--lora]
                                    [--unmerged] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from common import DEMO_DATA

from finjust import atomic
from finjust.cli.arguments import output_file, positive_int
from finjust.data.load import load_examples
from finjust.data.templates import prompt_ids
from finjust.eval import generate
from finjust.eval.generate import generate_answers
from finjust.models import load_model
from finjust.recipe.sections import EvalSection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=positive_int, default=16)
    parser.add_argument("--max-new-tokens", type=positive_int, default=EvalSection().max_new_tokens,
                        help="as the scorecard's eval.max_new_tokens (default: its default)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=EvalSection().batch_size)
    parser.add_argument("--lora", action="store_true", help="through an unmerged LoRA adapter, as a tuned run")
    parser.add_argument("--unmerged", action="store_true", help="with --lora: peft's unmerged layers")
    parser.add_argument("--rounds", type=positive_int, default=1)
    parser.add_argument("--json", metavar="PATH", type=output_file)
    args = parser.parse_args(argv)
    if args.unmerged:
        generate.lora_mergeable = lambda model: False  # type: ignore[assignment]  # as generation ran before merging
    loaded = load_model("smollm2-135m-instruct")
    model = _with_lora(loaded.model) if args.lora else loaded.model
    autocast = torch.bfloat16 if loaded.dtype == torch.bfloat16 else None
    prompts = [prompt_ids(loaded.tokenizer, e) for e in load_examples(DEMO_DATA / "test.jsonl")[: args.questions]]

    def timed(questions: list[list[int]], batch_size: int) -> tuple[float, list[str]]:
        started = time.perf_counter()
        answers = generate_answers(model, loaded.tokenizer, questions, args.max_new_tokens, batch_size,
                                   loaded.device, autocast)  # fmt: skip
        return time.perf_counter() - started, answers

    timed(prompts, args.batch_size), timed(prompts[:1], 1)  # warm-up, both ways
    batched_runs, single_runs = [], []
    for _ in range(args.rounds):
        batched_runs.append(timed(prompts, args.batch_size))
        single_runs.append(timed(prompts, 1))
    batched_s, single_s = (statistics.median(s for s, _ in runs) for runs in (batched_runs, single_runs))
    batched, single = batched_runs[0][1], single_runs[0][1]  # greedy: every round answers the same

    def answer_tokens(answers: list[str]) -> int:
        return sum(len(loaded.tokenizer(a, add_special_tokens=False).input_ids) for a in answers)

    result = {"questions": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "lora": args.lora, "merged": args.lora and not args.unmerged, "rounds": args.rounds,
              "batched_answers_per_second": len(prompts) / batched_s,
              "single_answers_per_second": len(prompts) / single_s,
              "batched_over_single": single_s / batched_s,
              "batched_answer_tokens_per_second": answer_tokens(batched) / batched_s,
              "single_answer_tokens_per_second": answer_tokens(single) / single_s,
              "round_seconds": {"batched": [s for s, _ in batched_runs], "single": [s for s, _ in single_runs]},
              "identical_answers": sum(a == b for a, b in zip(batched, single, strict=True))}  # fmt: skip
    print(_summary(result))
    if args.json:
        atomic.write_json(args.json, result)
    return 0


def _with_lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    from finjust.methods.peft_adapter import peft_false_alarms_off

    with peft_false_alarms_off():  # peft's FutureWarning about transformers' is_gradient_checkpointing
        config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        return get_peft_model(model, config)


def _summary(result: dict[str, Any]) -> str:
    way = (" through a LoRA adapter, " + ("merged for generation" if result["merged"] else "unmerged")
           if result["lora"] else "")
    return (f"{result['questions']} questions, {result['max_new_tokens']} new tokens at most{way}: batched "
            f"({result['batch_size']} at a time) {result['batched_answers_per_second']:.2f} answers/s "
            f"({result['batched_answer_tokens_per_second']:.0f} answer tokens/s); one at a time "
            f"{result['single_answers_per_second']:.2f} answers/s ({result['single_answer_tokens_per_second']:.0f} "
            f"answer tokens/s); ratio {result['batched_over_single']:.2f}x; identical answers "
            f"{result['identical_answers']} of {result['questions']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
