"""Printing a run's result: the scorecard table on stdout, JSON to a file on request."""

from __future__ import annotations

import argparse
from typing import Any

from finjust import atomic
from finjust.cli.arguments import output_file
from finjust.cli.process import show


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the scorecard as JSON to PATH")


def show_scorecard(scorecard: dict[str, Any], json_path: str | None) -> None:
    from finjust.eval.scorecard import format_scorecard  # here: --help needs no torch model code (finjust.cli.main)

    if json_path:  # first: the table's reader may be gone (`| head`)
        atomic.write_json(json_path, scorecard)
    show(format_scorecard(scorecard))
