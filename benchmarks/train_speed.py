"""Training speed: finjust's defaults against the Hugging Face Trainer, measured back to back.

On the shipped SmolLM2-135M and the demo data, LoRA r=16 on all linear layers, sequences up
to 512 tokens, 8 examples per step, the same steps for every variant:

  A  the Trainer + peft as the docs write it: fp32, padding per batch, LoRA dropout 0.05 (peft's
     own default is 0, but its quicktour's LoraConfig sets 0.1 and most recipes 0.05-0.1)
  B  the same Trainer with its best switches: bf16 autocast, padding-free flattening
     (DataCollatorWithFlattening), use_cache off
  b-malloc  B in the memory allocator finjust's command preloads (tcmalloc where installed,
     see finjust.allocator), to show what the allocator alone gives; left out without one
  finjust  finjust's own loop with its defaults for a run this short (bf16 weights, packing,
     per-example attention, chunked answer-token loss; not compiled), in the allocator the
     ``finjust`` command runs with (A and B run in glibc's malloc, as a Trainer script does)
  finjust-compiled  the same with ``train.compile: true`` (the default from 200 steps): the
     warm-up steps absorb the compiling, whose time is reported
  finjust-recompute  finjust's defaults with ``train.gradient_checkpointing: true`` (what
     "auto" picks when a step's activations would not fit): its memory and its cost

Every variant sees the same examples in the same steps (finjust's seeded plan; the Trainer
gets the plan's steps as its batches) from the same LoRA initialisation (finjust's adapter
matrices start rounded to bf16, as peft creates them beside its bf16 base, then train in
fp32; the zero B matrices are identical), so the loss curves are comparable step by step.
Each variant runs in its own process (so its peak RSS is its own); the machine's bf16 matmul
peak is measured in the same run for model FLOPs utilisation. Never run this beside another
heavy process: the figures are meaningless then.

    python benchmarks/train_speed.py [--steps 12] [--warmup 2] [--rounds 1] [--json out.json]
                                     [--device cpu|cuda] [--model NAME_OR_FOLDER] [--variants a,b,...]

``--rounds N`` runs all variants N times in turn and reports each variant's median run (and
the median of N peak measurements): on a shared machine whose speed wanders, use 3.

``--device cuda`` measures the same on a GPU: peak memory is then the GPU's (torch's peak
allocation), the peak is a bf16 matmul on the GPU, each step is timed until the GPU has done
its work, and b-malloc is left out (the host's allocator is not where a GPU step's time
goes). ``--model`` takes another model of SmolLM2-135M's shapes (the FLOP counts below are
that model's), e.g. a folder of random weights where the shipped package cannot travel.
``finjust-sdpa`` (only when named in ``--variants``) runs finjust with torch's
scaled-dot-product attention at every example length, where finjust takes its own kernel for
short examples: that choice, checked on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import DEMO_DATA, child_environment, memory_bytes

from finjust import atomic
from finjust.cli.arguments import non_negative_int, output_file, positive_int

VARIANTS = ("a", "b", "b-malloc", "finjust", "finjust-compiled", "finjust-recompute")
#: measured only when ``--variants`` names them
EXTRA_VARIANTS = ("finjust-sdpa",)
MAX_LENGTH = 512
BATCH = 8
SHIPPED = "smollm2-135m-instruct"
#: the ratios are read from these: the run stops when one fails; another's failure is reported
REQUIRED_VARIANTS = ("a", "b", "finjust")


class VariantFailed(Exception):
    """A variant's process exited with an error (its stderr's end is the message)."""


@dataclass(frozen=True)
class Bench:
    """What every variant of one benchmark run shares."""

    steps: int
    warmup: int
    device: str = "cpu"
    model: str = SHIPPED

    def arguments(self) -> list[str]:
        """The command-line arguments that give a child process this bench."""
        return ["--steps", str(self.steps), "--warmup", str(self.warmup), "--device", self.device, "--model", self.model]


class StepEnds:
    """Seconds between the ends of consecutive steps, each end taken once the GPU has finished
    the step's work. On CUDA the frameworks' own step timers stop while kernels still run (the
    Trainer's loss is read after its step-end callback), so their figures would flatter."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: list[float] = []

    def tick(self) -> None:
        import torch

        torch.cuda.synchronize()
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now


def _tokenized(tokenizer: Any) -> list[Any]:
    from finjust.data.load import load_examples
    from finjust.data.templates import tokenize_examples

    tokens, _ = tokenize_examples(load_examples(DEMO_DATA / "train.jsonl"), tokenizer, MAX_LENGTH)
    return tokens


def _plan(n_examples: int, steps: int) -> list[list[int]]:
    """finjust's seeded data order (as its loop plans it): the example indices of each step."""
    from finjust.train.plan import plan_steps

    return [micro[0] for micro in plan_steps(n_examples, BATCH, 1, 1.0, steps, seed=0).steps]


def _lora_config(dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def run_trainer(variant: str, bench: Bench) -> dict[str, Any]:
    """Baselines A and B: the Trainer with per-step timing from a callback."""
    import torch
    from peft import get_peft_model
    from torch.utils.data import DataLoader
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from finjust.models import load_model

    loaded = load_model(bench.model, dtype="float32", device=bench.device)
    torch.manual_seed(0)  # the same LoRA initialisation in every variant
    model = get_peft_model(loaded.model, _lora_config(0.05 if variant == "a" else 0.0))
    rows = [{"input_ids": t.input_ids, "labels": t.labels} for t in _tokenized(loaded.tokenizer)]
    if variant == "a":
        collate = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True)
    else:
        model.config.use_cache = False  # a KV cache makes transformers ignore packing boundaries
        collate = DataCollatorWithFlattening()
    counted: list[list[int]] = []

    def counting_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        counted.append([len(r["input_ids"]) for r in batch])
        return collate(batch)

    times: list[float] = []
    losses: list[float] = []
    ends = StepEnds()

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            ends.last = time.perf_counter()

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            if bench.device == "cuda":
                ends.tick()
            times.append(time.perf_counter() - self.started)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    plan = _plan(len(rows), bench.warmup + bench.steps)

    class InPlanOrder(Trainer):
        def get_train_dataloader(self) -> DataLoader:
            # the plan's steps as the batches, so a step the plan fills with fewer examples (the
            # demo's 310 make 38 full steps) stays the same step in every variant
            return self.accelerator.prepare(DataLoader(rows, batch_sampler=plan, collate_fn=counting_collate))

    with tempfile.TemporaryDirectory(prefix="finjust-bench-trainer-") as output_dir:  # saves nothing; left none
        args = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=BATCH,
            max_steps=bench.warmup + bench.steps, learning_rate=2e-4, lr_scheduler_type="constant", logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=bench.device == "cpu", bf16=variant == "b",
            dataloader_num_workers=0, remove_unused_columns=False, seed=0,
        )  # fmt: skip
        InPlanOrder(model=model, args=args, train_dataset=rows, callbacks=[Clock()]).train()  # batches: its loader
    _require_plan(counted[: len(times)], [[len(rows[i]["input_ids"]) for i in step] for step in plan], "the Trainer")
    return _summary(ends.seconds if bench.device == "cuda" else times, counted, losses, bench)


def run_finjust(bench: Bench, compile_: bool, recompute: bool | None = None) -> dict[str, Any]:
    """finjust's loop with its defaults, timed from its own per-step events."""
    import shutil
    import tempfile

    import torch

    from finjust.methods import get_method
    from finjust.models import load_model
    from finjust.recipe import TrainSection
    from finjust.train.log import MetricsLog
    from finjust.train.loop import LoopSetup, train_model

    loaded = load_model(bench.model, device=bench.device)
    method = get_method("lora")
    torch.manual_seed(0)  # the same LoRA initialisation in every variant
    model = method.apply(loaded.model, method.options_class())
    records: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="finjust-bench-"))
    steps = bench.warmup + bench.steps
    ends = StepEnds()

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "step":
            records.append(payload)
            if bench.device == "cuda":
                ends.tick()

    cfg = TrainSection(epochs=1, max_steps=steps, batch_size=BATCH, warmup_ratio=0.0, scheduler="constant",
                       save_every=10**9, patience=None, seed=0, compile=compile_,
                       gradient_checkpointing=recompute)  # fmt: skip
    setup = LoopSetup(
        train=_tokenized(loaded.tokenizer), validation=[], cfg=cfg, lr=2e-4, checkpoints=folder / "checkpoints",
        log=MetricsLog(folder / "metrics.jsonl"), device=loaded.device,
        autocast_dtype=torch.bfloat16 if loaded.dtype == torch.bfloat16 else None,
        on_event=on_event,
    )  # fmt: skip
    ends.last = time.perf_counter()
    try:
        train_model(model, setup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the loop's last checkpoint: ~57 MB a run
    lengths = [[len(setup.train[i].input_ids) for i in step] for step in _plan(len(setup.train), steps)]
    _require_plan([[r["tokens"]] for r in records], [[sum(step)] for step in lengths], "finjust's loop")
    seconds = ends.seconds if bench.device == "cuda" else [r["seconds"] for r in records]
    return _summary(seconds, lengths, [r["loss"] for r in records], bench)


def _require_plan(trained: list[list[int]], planned: list[list[int]], who: str) -> None:
    """Every variant must train on the plan's steps (compared by their example lengths), or the
    figures compare different work."""
    if trained != planned:
        raise RuntimeError(f"{who} trained on other steps than the benchmark's plan: its figures would lie")


def _summary(seconds: list[float], lengths: list[list[int]], losses: list[float], bench: Bench) -> dict[str, Any]:
    """Speed over the steps after the warm-up (``lengths``: each step's example lengths); the loss
    of every step; the peak memory of the device trained on."""
    warmup = bench.warmup
    timed = sum(seconds[warmup:])
    measured = lengths[warmup : len(seconds)]
    return {
        "steps": len(seconds) - warmup,
        "real_tokens": sum(map(sum, measured)),
        "model_flops_per_second": sum(map(step_flops, measured)) / timed,
        "seconds_per_step": timed / (len(seconds) - warmup),
        "first_step_seconds": seconds[0],
        "real_tokens_per_second": sum(map(sum, measured)) / timed,
        "losses": losses,
        "final_loss": sum(losses[-3:]) / len(losses[-3:]),
        # VmHWM, not getrusage's ru_maxrss: a child started by vfork and exec inherits its
        # parent's peak in ru_maxrss (the parent's, 1.67 GB, then read as every finjust variant's)
        "peak_rss_gb": memory_bytes("VmHWM") / 1e9,
        **({"peak_gpu_gb": _gpu_peak_gb()} if bench.device == "cuda" else {}),
    }


def _gpu_peak_gb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9


def peak_memory_gb(result: dict[str, Any]) -> float:
    """The memory a variant's figures compare: the GPU's where it trained on one, else the process's RSS."""
    return result.get("peak_gpu_gb", result["peak_rss_gb"])


def matmul_peak(size: int = 2048, repeats: int = 10, trials: int = 5, dtype: str = "bfloat16",
                device: str = "cpu") -> float:  # fmt: skip
    """GFLOP/s of a square bf16 (or ``dtype``) matmul, the best of ``trials``: the ceiling model
    FLOPs utilisation is measured against (one trial alone moved by +-5% between runs). A GPU
    multiplies 8192-square matrices (2048 leave an H100 mostly idle)."""
    import torch

    size = 8192 if device == "cuda" else size
    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype), device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(trials):
        _synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best / 1e9


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures depend on: the CPU, the threads, what multiplies bf16 (AMX tiles make
    bf16 ~10x fp32, AVX512-BF16 ~2x; on CUDA the GPU), and the fp32 matmul peak (baseline A's ceiling)."""
    import torch

    if device == "cuda":
        unit = torch.cuda.get_device_name()
    else:
        unit = ("AMX" if torch.cpu._is_amx_tile_supported()
                else "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else "no native bf16")  # fmt: skip
    return {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "bf16_unit": unit,
            "fp32_matmul_peak_gflops": matmul_peak(dtype="float32", device=device)}  # fmt: skip


HIDDEN, LAYERS, INTERMEDIATE, KV_DIM, VOCAB, RANK = 576, 30, 1536, 192, 49152, 16
# (inputs, outputs) of each linear layer in a decoder layer: q, k, v, o, gate, up, down
LINEAR_SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV_DIM), (HIDDEN, KV_DIM), (HIDDEN, HIDDEN),
                 (HIDDEN, INTERMEDIATE), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]  # fmt: skip


def flops_per_token() -> float:
    """Model FLOPs of one trained token outside attention, LoRA r=16 on every linear layer.

    The frozen weights (N: the decoder's linear layers and the head) need a forward and an
    input gradient, 4N; the adapters' weights (r x (inputs + outputs) a layer) train, so also
    a weight gradient, 6 each. The head counts for every token, as the convention has it
    (finjust computes logits only for answer tokens: what it skips is credited, not earned).
    """
    frozen = LAYERS * sum(i * o for i, o in LINEAR_SHAPES) + HIDDEN * VOCAB
    adapters = LAYERS * sum(RANK * (i + o) for i, o in LINEAR_SHAPES)
    return 4 * frozen + 6 * adapters


def attention_flops(length: int) -> float:
    """Attention's model FLOPs for one example: each token's scores and weighted values over its
    causal context (4 x hidden FLOPs a key forward, twice that backward), in every layer."""
    keys = length * (length + 1) // 2
    return 12 * HIDDEN * LAYERS * keys


def step_flops(lengths: list[int]) -> float:
    """Model FLOPs of a training step over examples of these lengths (tokens each)."""
    return sum(n * flops_per_token() + attention_flops(n) for n in lengths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=12)
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="alternating rounds; each variant's median is reported")
    parser.add_argument("--json", metavar="PATH", type=output_file)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", default=SHIPPED, help="a model of SmolLM2-135M's shapes (default: the shipped one)")
    parser.add_argument("--variants", type=_variant_list, help="comma-separated (default: all but finjust-sdpa)")
    parser.add_argument("--variant", choices=VARIANTS + EXTRA_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bench = Bench(args.steps, args.warmup, args.device, args.model)
    if args.variant:
        print(json.dumps(_run_variant(args.variant, bench)))
        return 0
    if problem := _shape_problem(args.model):
        parser.error(problem)
    variants = args.variants or [v for v in VARIANTS if not (bench.device == "cuda" and v == "b-malloc")]
    results, peak, failures = _measure(args.rounds, bench, variants)
    report = {**_report(results, peak), "failed": failures, "machine": describe_machine(bench.device)}
    print(_table(report))
    if args.json:
        atomic.write_json(args.json, report)
    return 0


def _shape_problem(model: str) -> str | None:
    """Why ``model``'s FLOPs would be miscounted: the counts are SmolLM2-135M's shapes."""
    from finjust.errors import FinjustError
    from finjust.models.load import resolve_model_folder

    try:
        config = json.loads((resolve_model_folder(model) / "config.json").read_text())
        heads = config["num_attention_heads"]
        kv_dim = config.get("num_key_value_heads", heads) * config.get("head_dim", config["hidden_size"] // heads)
        found = (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"], kv_dim,
                 config["vocab_size"])  # fmt: skip
    except (FinjustError, OSError, ValueError, KeyError) as error:
        return f"--model {model}: cannot read its shapes ({error})"
    expected = (HIDDEN, LAYERS, INTERMEDIATE, KV_DIM, VOCAB)
    if found == expected:
        return None
    return (f"--model {model}: (hidden, layers, intermediate, kv dim, vocab) {found}, not SmolLM2-135M's {expected}, "
            "which the model FLOPs and MFU count")  # fmt: skip


def _variant_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS + EXTRA_VARIANTS))
    if unknown or not set(REQUIRED_VARIANTS) <= set(names):
        raise argparse.ArgumentTypeError(
            f"unknown {unknown}; choose from {', '.join(VARIANTS + EXTRA_VARIANTS)}" if unknown
            else "the ratios need a, b and finjust among them")  # fmt: skip
    return names


def _measure(rounds: int, bench: Bench, variants: list[str]) -> tuple[dict[str, dict[str, Any]], float, dict[str, str]]:
    """Each variant's median run over ``rounds`` rounds of all variants in turn, the median bf16
    peak (measured after each round), and why the variants that failed did: on a shared machine a
    burst of load elsewhere slows one round of one variant, which a median leaves out and a
    single run would not. A required variant failing in the first round stops the benchmark;
    in a later one it ends the rounds, and the rounds already run are reported."""
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    peaks = []
    failures: dict[str, str] = {}
    for number in range(1, rounds + 1):
        finished = {variant: len(found) for variant, found in runs.items()}  # the runs of the rounds before
        for variant in variants:
            try:
                result = _child(variant, bench)
            except VariantFailed as exc:
                if variant in REQUIRED_VARIANTS and number == 1:
                    raise
                if variant in REQUIRED_VARIANTS:  # keep the finished rounds (each ~3 minutes) in the report
                    failures[f"{variant} in round {number}"] = f"{exc}; reporting rounds 1-{number - 1}"
                    kept = {name: found[: finished[name]] for name, found in runs.items()}
                    return _medians(kept), statistics.median(peaks), failures
                failures[variant] = str(exc)  # the other variants' figures still stand
                continue
            if result is None:
                failures[variant] = "no tcmalloc or jemalloc found to preload (see finjust.allocator)"
                continue
            runs[variant].append(result)
        peaks.append(matmul_peak(device=bench.device))
    return _medians(runs), statistics.median(peaks), failures


def _medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {variant: _median_run(found) for variant, found in runs.items() if found}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median speed (the slower middle one of an even count), with every round's speed."""
    ordered = sorted(runs, key=lambda run: run["real_tokens_per_second"])
    speeds = [run["real_tokens_per_second"] for run in runs]
    return {**ordered[(len(ordered) - 1) // 2], "round_tokens_per_second": speeds}


def _run_variant(variant: str, bench: Bench) -> dict[str, Any]:
    from finjust import allocator

    if variant == "finjust-sdpa":
        from finjust.models import segment_attention

        segment_attention.MATH_KERNEL_MAX_TOKENS = 0  # read at every call: no example takes the short kernel
    if variant.startswith("finjust"):
        result = run_finjust(bench, compile_=variant == "finjust-compiled",
                             recompute=True if variant == "finjust-recompute" else None)  # fmt: skip
    else:
        result = run_trainer(variant.removesuffix("-malloc"), bench)
    return {**result, "allocator": allocator.active() or "glibc"}


def _child(variant: str, bench: Bench) -> dict[str, Any] | None:
    """Run one variant in its own process; None where it needs a fast allocator and none is found."""
    environment = child_environment(preload=variant.startswith("finjust") or variant.endswith("-malloc"))
    if environment is None and variant.endswith("-malloc"):
        return None
    environment = environment or child_environment(preload=False)
    command = [sys.executable, __file__, "--variant", variant, *bench.arguments()]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise VariantFailed(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(results: dict[str, dict[str, Any]], peak: float) -> dict[str, Any]:
    speed = {v: r["real_tokens_per_second"] for v, r in results.items()}
    for result in results.values():
        result["mfu"] = result["model_flops_per_second"] / (peak * 1e9)
    for result in results.values():  # "the same loss curve": step by step against baseline B
        gaps = [abs(x - y) for x, y in zip(result["losses"], results["b"]["losses"], strict=True)]
        result["loss_gap_to_b"] = sum(gaps) / len(gaps)
    compiled = speed.get("finjust-compiled")
    return {
        "variants": results,
        "bf16_matmul_peak_gflops": peak,
        "finjust_over_a": speed["finjust"] / speed["a"],
        "finjust_over_b": speed["finjust"] / speed["b"],
        "compiled_over_a": compiled / speed["a"] if compiled else None,
        "compiled_over_b": compiled / speed["b"] if compiled else None,
        "finjust_over_b_malloc": speed["finjust"] / speed["b-malloc"] if "b-malloc" in speed else None,
        "peak_rss_gb": {v: r["peak_rss_gb"] for v, r in results.items()},
        "peak_rss_of_b": {v: r["peak_rss_gb"] / results["b"]["peak_rss_gb"] for v, r in results.items()},
        "peak_memory_of_b": {v: peak_memory_gb(r) / peak_memory_gb(results["b"]) for v, r in results.items()},
    }


def _table(report: dict[str, Any]) -> str:
    lines = [_machine_line(report["machine"])] if "machine" in report else []
    lines += [f"{'variant':<18}{'tok/s':>7}{'s/step':>8}{'1st step s':>11}{'peak GB':>9}{'loss':>7}"
             f"{'gap to B':>9}{'MFU':>7}  malloc"]  # fmt: skip
    for name, r in report["variants"].items():
        lines.append(f"{name:<18}{r['real_tokens_per_second']:>7.0f}{r['seconds_per_step']:>8.2f}"
                     f"{r['first_step_seconds']:>11.1f}{peak_memory_gb(r):>9.2f}{r['final_loss']:>7.3f}"
                     f"{r['loss_gap_to_b']:>9.3f}{r['mfu']:>7.1%}  {r['allocator']}")  # fmt: skip
    compiled = (f"; compiled/A {report['compiled_over_a']:.2f}x, compiled/B {report['compiled_over_b']:.2f}x"
                if report["compiled_over_a"] is not None else "")  # fmt: skip
    lines.append(f"bf16 matmul peak {report['bf16_matmul_peak_gflops']:.0f} GFLOP/s; "
                 f"finjust/A {report['finjust_over_a']:.2f}x, finjust/B {report['finjust_over_b']:.2f}x{compiled}")  # fmt: skip
    if report["finjust_over_b_malloc"] is not None:
        lines.append(f"in the same allocator: finjust/B {report['finjust_over_b_malloc']:.2f}x")
    shares = report["peak_memory_of_b"]
    labels = {"finjust": "finjust", "finjust-compiled": "compiled", "finjust-recompute": "recompute",
              "finjust-sdpa": "sdpa"}  # fmt: skip
    on_gpu = any("peak_gpu_gb" in r for r in report["variants"].values())
    lines.append(f"peak {'GPU ' if on_gpu else ''}memory of B's: "
                 + ", ".join(f"{label} {shares[name]:.0%}" for name, label in labels.items() if name in shares))
    lines.append("(loss: mean of the last 3 steps; gap to B: mean |loss - loss of B| over all steps"
                 + ("; peak GB: the GPU memory torch allocated)" if on_gpu else ")"))
    rounds = {name: r.get("round_tokens_per_second", []) for name, r in report["variants"].items()}
    if any(len(speeds) > 1 for speeds in rounds.values()):
        lines.append("each variant's median of its rounds, which ran at (tokens/s): " + "; ".join(
            f"{name} {'/'.join(f'{s:.0f}' for s in speeds)}" for name, speeds in rounds.items()))  # fmt: skip
    for name, reason in report.get("failed", {}).items():
        lines.append(f"{name} failed: {reason}")
    return "\n".join(lines)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []  # fmt: skip
    return names[0] if names else platform.processor() or "unknown"


def _machine_line(machine: dict[str, Any]) -> str:
    return (f"machine: {machine['cpu']}, {machine['threads']} threads, bf16 by {machine['bf16_unit']}, "
            f"fp32 matmul peak {machine['fp32_matmul_peak_gflops']:.0f} GFLOP/s")


if __name__ == "__main__":
    sys.exit(main())
