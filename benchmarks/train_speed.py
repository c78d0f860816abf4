"""Training speed: finjust's defaults against the Hugging Face Trainer, measured back to back.

On the shipped SmolLM2-135M and the demo data, LoRA r=16 on all linear layers, sequences up
to 512 tokens, 8 examples per step, the same steps for every variant:

  A  the Trainer + peft as the docs write it: fp32, padding per batch, LoRA dropout 0.05
  B  the same Trainer with its best switches: bf16 autocast, padding-free flattening
     (DataCollatorWithFlattening), use_cache off
  finjust  finjust's own loop with its defaults (bf16 weights, packing, answer-token logits)

Each variant runs in its own process (so its peak RSS is its own); the machine's bf16
matmul peak is measured in the same run for model FLOPs utilisation. Never run this
beside another heavy process: the figures are meaningless then.

    python benchmarks/train_speed.py [--steps 12] [--warmup 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("a", "b", "finjust")
MAX_LENGTH = 512
BATCH = 8
DEMO = Path(__file__).resolve().parent.parent / "src" / "finjust" / "demo" / "data" / "train.jsonl"


def _tokenized(tokenizer: Any) -> list[Any]:
    from finjust.data.formats import load_examples
    from finjust.data.templates import tokenize_examples

    tokens, _ = tokenize_examples(load_examples(DEMO), tokenizer, MAX_LENGTH)
    return tokens


def _lora_config(dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def run_trainer(variant: str, steps: int, warmup: int) -> dict[str, Any]:
    """Baselines A and B: the Trainer with per-step timing from a callback."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainerCallback
    from transformers import TrainingArguments

    from finjust.models import load_model

    loaded = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    model = get_peft_model(loaded.model, _lora_config(0.05 if variant == "a" else 0.0))
    rows = [{"input_ids": t.input_ids, "labels": t.labels} for t in _tokenized(loaded.tokenizer)]
    if variant == "a":
        collate = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True)
    else:
        model.config.use_cache = False  # a KV cache makes transformers ignore packing boundaries
        collate = DataCollatorWithFlattening()
    counted: list[int] = []

    def counting_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        counted.append(sum(len(r["input_ids"]) for r in batch))
        return collate(batch)

    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.started)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir="/tmp/finjust-bench-trainer", per_device_train_batch_size=BATCH, max_steps=warmup + steps,
        learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        bf16=variant == "b", dataloader_num_workers=0, remove_unused_columns=False, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collate, callbacks=[Clock()]).train()
    return _summary(times[warmup:], counted[warmup : warmup + steps], losses)


def run_finjust(steps: int, warmup: int) -> dict[str, Any]:
    """finjust's loop with its defaults, timed from its own per-step events."""
    import tempfile
    from types import SimpleNamespace

    from finjust.methods import get_method
    from finjust.models import load_model
    import torch

    from finjust.train.log import MetricsLog
    from finjust.train.loop import LoopSetup, train_model

    loaded = load_model("smollm2-135m-instruct", device="cpu")
    method = get_method("lora")
    model = method.apply(loaded.model, method.options_class())
    records: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="finjust-bench-"))
    cfg = SimpleNamespace(
        epochs=1, max_steps=warmup + steps, batch_size=BATCH, grad_accum=1, warmup_ratio=0.0, scheduler="constant",
        weight_decay=0.0, max_grad_norm=1.0, eval_every=None, save_every=10**9, patience=None, seed=0, l2sp=0.0,
        forgetting_guard=None, forgetting_action="stop",
    )  # fmt: skip
    setup = LoopSetup(
        train=_tokenized(loaded.tokenizer), validation=[], cfg=cfg, lr=2e-4, checkpoints=folder / "checkpoints",
        log=MetricsLog(folder / "metrics.jsonl"), device=loaded.device,
        autocast_dtype=torch.bfloat16 if loaded.dtype == torch.bfloat16 else None,
        on_event=lambda kind, payload: records.append(payload) if kind == "step" else None,
    )  # fmt: skip
    train_model(model, setup)
    timed = records[warmup:]
    return _summary([r["seconds"] for r in timed], [r["tokens"] for r in timed], [r["loss"] for r in records])


def _summary(seconds: list[float], tokens: list[int], losses: list[float]) -> dict[str, Any]:
    total = sum(seconds)
    return {
        "steps": len(seconds),
        "real_tokens": sum(tokens),
        "seconds_per_step": total / len(seconds),
        "real_tokens_per_second": sum(tokens) / total,
        "final_loss": sum(losses[-3:]) / len(losses[-3:]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def bf16_matmul_peak(size: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of a square bf16 matmul: the ceiling model FLOPs utilisation is measured against."""
    import torch

    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_token() -> float:
    """Model FLOPs of one trained token with a frozen base: forward (2N) + input gradients (2N).

    N counts the non-embedding weights; the head counts too, since its logits are needed
    (finjust computes them only for answer tokens, which this convention does not credit).
    """
    hidden, layers, intermediate, kv_dim, vocab = 576, 30, 1536, 192, 49152
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * intermediate
    return 4 * (layers * per_layer + hidden * vocab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        run = run_finjust if args.variant == "finjust" else lambda s, w: run_trainer(args.variant, s, w)
        print(json.dumps(run(args.steps, args.warmup)))
        return 0
    results = {v: _child(v, args.steps, args.warmup) for v in VARIANTS}
    peak = bf16_matmul_peak()
    report = _report(results, peak)
    print(_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _child(variant: str, steps: int, warmup: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--variant", variant, "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _report(results: dict[str, dict[str, Any]], peak: float) -> dict[str, Any]:
    speed = {v: r["real_tokens_per_second"] for v, r in results.items()}
    for result in results.values():
        result["mfu"] = result["real_tokens_per_second"] * flops_per_token() / (peak * 1e9)
    return {
        "variants": results,
        "bf16_matmul_peak_gflops": peak,
        "finjust_over_a": speed["finjust"] / speed["a"],
        "finjust_over_b": speed["finjust"] / speed["b"],
        "peak_rss_gb": {v: r["peak_rss_gb"] for v, r in results.items()},
    }


def _table(report: dict[str, Any]) -> str:
    lines = [f"{'variant':<10}{'tok/s':>9}{'s/step':>9}{'peak GB':>9}{'loss':>8}{'MFU':>8}"]
    for name, r in report["variants"].items():
        lines.append(f"{name:<10}{r['real_tokens_per_second']:>9.0f}{r['seconds_per_step']:>9.2f}"
                     f"{r['peak_rss_gb']:>9.2f}{r['final_loss']:>8.3f}{r['mfu']:>8.1%}")  # fmt: skip
    lines.append(f"bf16 matmul peak {report['bf16_matmul_peak_gflops']:.0f} GFLOP/s; "
                 f"finjust/A {report['finjust_over_a']:.2f}x, finjust/B {report['finjust_over_b']:.2f}x")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
