"""``finjust eval RUN_DIR``: score a trained run again, base against tuned."""

from __future__ import annotations

import argparse

from finjust.cli.output import add_json_option, show_scorecard
from finjust.cli.progress import ProgressPrinter


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(
        name,
        help=summary,
        description="Rebuild the run's test split, check it against the manifest, score base and tuned. "
        "Writes RUN_DIR/scorecard.json (keeping the best step and stop reason training recorded there).",
        epilog="example:\n  finjust eval runs/my-first --json score.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder written by finjust train")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from finjust.eval.evaluate import evaluate_run  # here: --help needs no torch model code (finjust.cli.main)

    show_scorecard(evaluate_run(args.run_dir, on_event=ProgressPrinter()), args.json)
    return 0
