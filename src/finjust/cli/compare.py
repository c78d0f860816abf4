"""``finjust compare RUN_DIR``: the tuned model against base, prompting, RAG and tuned + RAG."""

from __future__ import annotations

import argparse
from pathlib import Path

from finjust import atomic
from finjust.cli.arguments import output_file
from finjust.cli.process import show
from finjust.cli.progress import ProgressPrinter
from finjust.eval.augment import FEW_SHOT_INSTRUCTION
from finjust.eval.compare_rows import DEFAULT_ROWS, STRATEGIES
from finjust.eval.retrieval import DEFAULT_ENCODER


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    rows = "\n".join(f"  {row:<8}{STRATEGIES.get(row).description}" for row in DEFAULT_ROWS)
    parser = commands.add_parser(
        name,
        help=summary,
        description="Answer the run's held-out test questions five ways and score each with the recipe's "
        f"metrics, prompt tokens, latency, memory and one-off cost. Writes RUN_DIR/compare.json.\n\nrows:\n{rows}",
        epilog="examples:\n  finjust compare runs/demo\n"
        "  finjust compare runs/demo --shots 5 --top-k 2 --json cmp.json\n"
        "  finjust compare runs/demo --docs manuals/ --html compare.html\n"
        "  finjust compare runs/demo --rows base,rag --max-examples 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder written by finjust train")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated rows to run (default: all)")
    parser.add_argument("--shots", type=int, default=3, help="training examples in the prompt row (default 3)")
    parser.add_argument("--top-k", type=int, default=3, help="sources retrieved for rag and hybrid (default 3)")
    parser.add_argument("--docs", metavar="FOLDER",
                        help="retrieve from the .txt/.md files in FOLDER instead of the training records")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER,
                        help=f"sentence encoder: a shipped name or a model folder (default {DEFAULT_ENCODER})")
    parser.add_argument("--system-prompt", default=FEW_SHOT_INSTRUCTION, help="system prompt of the prompt row")
    parser.add_argument("--max-examples", type=int, help="score at most N test examples (default: the recipe's)")
    parser.add_argument("--headline", metavar="METRIC",
                        help="metric each row is tested against base on (default: the recipe's first eval metric)")
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the comparison as JSON to PATH")
    parser.add_argument("--html", metavar="PATH", type=output_file,
                        help="also write the comparison as a self-contained HTML page")


def run(args: argparse.Namespace) -> int:
    from finjust.eval.compare import CompareOptions, compare_run, format_comparison  # here: --help loads no model code

    options = CompareOptions(
        rows=[r.strip() for r in args.rows.split(",") if r.strip()],
        shots=args.shots,
        top_k=args.top_k,
        docs=Path(args.docs) if args.docs else None,
        encoder=args.encoder,
        instruction=args.system_prompt,
        max_examples=args.max_examples,
        headline=args.headline,
    )
    result = compare_run(args.run_dir, options, on_event=ProgressPrinter())
    if args.json:  # the files first: the table's reader may be gone (`| head`)
        atomic.write_json(args.json, result)
    if args.html:
        from finjust.eval.report import comparison_page  # matplotlib loads only when a page is asked for

        atomic.write_text(args.html, comparison_page(result))
    show(format_comparison(result))
    return 0
