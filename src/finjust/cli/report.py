"""``finjust report RUN_DIR``: one self-contained HTML page about a run."""

from __future__ import annotations

import argparse

from finjust.cli.arguments import non_negative_int, output_file
from finjust.cli.process import show


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(
        name,
        help=summary,
        description="Read a run folder and write one HTML page with the figures embedded, so it can be "
        "mailed or archived as a single file. Includes the comparison table once `finjust compare` has run.",
        epilog="examples:\n  finjust report runs/demo            # writes runs/demo/report.html\n"
        "  finjust report runs/demo --output demo.html --samples 12",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder written by finjust train")
    parser.add_argument("--output", metavar="PATH", type=output_file,
                        help="where to write the page (default RUN_DIR/report.html)")
    parser.add_argument("--samples", type=non_negative_int, default=8,
                        help="test questions shown with both answers (default 8)")


def run(args: argparse.Namespace) -> int:
    from finjust.eval.report import write_report  # matplotlib (~0.7 s) loads only for this command

    show(f"report written to {write_report(args.run_dir, args.output, args.samples)}")
    return 0
