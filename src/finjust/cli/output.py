"""Printing a run's result: the scorecard table on stdout, JSON to a file on request."""

from __future__ import annotations

import argparse
from typing import Any

from finjust import atomic
from finjust.cli.arguments import output_file


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the scorecard as JSON to PATH")


def show_scorecard(scorecard: dict[str, Any], json_path: str | None) -> None:
    from finjust.eval.scorecard import format_scorecard  # here: --help needs no torch model code (finjust.cli.main)

    print(format_scorecard(scorecard))
    if json_path:
        atomic.write_json(json_path, scorecard)
