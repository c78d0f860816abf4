"""``finjust export RUN_DIR --format FORMAT``: ship a trained run, checked against the trained model."""

from __future__ import annotations

import argparse
from typing import Any

from finjust import atomic
from finjust.cli.arguments import fraction, output_file, positive_int
from finjust.cli.process import show
from finjust.cli.progress import ProgressPrinter
from finjust.errors import ExportError
from finjust.export import FORMATS, get_format


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    formats = "\n".join(f"  {n:<8} {get_format(n).summary}" for n in FORMATS.names())
    parser = commands.add_parser(
        name,
        help=summary,
        description="Write the run's model in one format, run it in that format's own runtime on the first "
        "test questions and compare its greedy answers and logits with the trained model's. A failed check "
        "writes nothing.\n\nformats:\n" + formats,
        epilog="examples:\n  finjust export runs/my-first --format merged\n"
        "  finjust export runs/my-first --format gguf --quant q4_k_m\n"
        "  finjust export runs/my-first --format onnx --out onnx-model --json export.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder written by finjust train")
    parser.add_argument("--format", required=True, choices=FORMATS.names(), help="what to write")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/export/FORMAT[-QUANT])")
    parser.add_argument("--quant", help=f"weight type: {_quant_choices()}")
    parser.add_argument("--prompts", type=positive_int, default=8,
                        help="test questions in the parity check (default 8)")
    parser.add_argument("--max-new-tokens", type=positive_int, help="answer length in the parity check (default: the "
                        "recipe's, at most 64)")  # fmt: skip
    parser.add_argument("--min-agreement", type=fraction, help="least token agreement to accept (default: the "
                        "format's, see the README)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the result (export.json) to PATH")


def _quant_choices() -> str:
    """Each format's weight types, as its class lists them (``gguf: f32, ..., q8_0 (default), ...``)."""
    described = []
    for name in FORMATS.names():
        fmt = get_format(name)
        if fmt.quant_choices:
            types = (f"{q} (default)" if q == fmt.default_quant else q for q in fmt.quant_choices)
            described.append(f"{name}: {', '.join(types)}")
    return "; ".join(described)


def run(args: argparse.Namespace) -> int:
    from finjust.export import export_run  # here: --help loads no model code

    try:
        result = export_run(args.run_dir, args.format, out=args.out, quant=args.quant, prompts=args.prompts,
                            max_new_tokens=args.max_new_tokens, min_agreement=args.min_agreement,
                            on_event=ProgressPrinter())  # fmt: skip
    except ExportError as error:
        if args.json and error.result is not None:  # the parity report of a failed check: why it failed
            atomic.write_json(args.json, error.result)
        raise
    show(format_result(result))
    if args.json:
        atomic.write_json(args.json, result)
    return 0


def format_result(result: dict[str, Any]) -> str:
    """The export and its parity as a small table."""
    if result.get("objective") == "classification":
        return _format_classifier(result)
    parity = result["parity"]
    limits = parity["thresholds"]
    label = result["format"] + (f" {result['quant']}" if result["quant"] else "")
    diff, alike = parity["max_logit_diff"], parity["prompts_alike"]
    speed_ref = parity["reference_tokens"] / max(parity["reference_seconds"], 1e-9)
    speed_exp = parity["export_tokens"] / max(parity["export_seconds"], 1e-9)
    rows = [
        ("exported", f"{label} -> {result['path']}"),
        ("size", f"{result['size_bytes'] / 1e6:.1f} MB"),
        ("runtime", parity["runtime"]),
        ("prompts", str(parity["prompts"])),
        ("prompts encoded alike", "n/a" if alike is None else f"{alike:.3f}  (need 1.0: the export's own chat "
                                                               "template and tokenizer)"),
        ("token agreement", f"{parity['agreement']:.3f}  (need >= {limits['min_agreement']})"),
        ("identical answers", f"{parity['exact']:.3f}  (need >= {limits['min_exact']})"),
        ("max logit diff", "n/a" if diff is None else f"{diff:.2e}" + (
            f"  (need <= {limits['max_logit_diff']:.0e})" if limits["max_logit_diff"] is not None else "")),
        ("stops at end-of-turn", f"export {parity['stops_export']}/{parity['prompts']}, trained "
                                 f"{parity['stops_reference']}/{parity['prompts']}; declared: "
                                 f"{'yes' if parity['stop_token_declared'] else 'NO'}"),
        ("speed", f"export {speed_exp:.1f} tok/s, trained {speed_ref:.1f} tok/s"),
        ("parity", "passed" if parity["passed"] else "FAILED: " + "; ".join(parity["failures"])),
    ]  # fmt: skip
    if "generate" in result:  # prompt and prefix tuning: plain peft generates them wrongly
        rows.append(("generate", str(result["generate"])))
    return _table(rows)


def _format_classifier(result: dict[str, Any]) -> str:
    parity = result["parity"]
    rows = [
        ("exported", f"{result['format']} (classifier) -> {result['path']}"),
        ("size", f"{result['size_bytes'] / 1e6:.1f} MB"),
        ("runtime", parity["runtime"]),
        ("test texts", str(parity["texts"])),
        ("same label", f"{parity['label_agreement']:.3f}  (need 1.0)"),
        ("max logit diff", f"{parity['max_logit_diff']:.2e} one by one, {parity['batch_logit_diff']:.2e} "
                           "as one padded batch"),
        ("seconds", f"export {parity['export_seconds']:.2f} s, trained {parity['reference_seconds']:.2f} s"),
        ("parity", "passed" if parity["passed"] else "FAILED"),
    ]
    return _table(rows)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
