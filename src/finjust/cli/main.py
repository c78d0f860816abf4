"""``finjust``: fine-tune a pretrained model on your data and prove it got better.

Each subcommand lives in its own module with ``add_parser`` and ``run``; this file only
dispatches and turns a :class:`FinjustError` into one line on stderr and exit status 2.
Only the subcommand being run is imported: most import torch, transformers and peft (~7 s
here), which ``finjust --help`` and a light command such as ``report`` need not wait for.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from finjust.cli.process import exit_status, stopped, tell, termination_as_interrupt, tolerate_any_encoding
from finjust.errors import FinjustError

#: each subcommand: its module under finjust.cli, and the line ``finjust --help`` shows for it
SUBCOMMANDS = {
    "demo": ("demo", "fine-tune the shipped model on the shipped demo data and print the scorecard"),
    "data": ("data", "check data files: formats, splits, duplicates, leakage, PII"),
    "train": ("train", "fine-tune as a recipe says, then print the scorecard"),
    "eval": ("eval_cmd", "score a trained run on its held-out test split"),
    "compare": ("compare", "compare the tuned model with prompting, RAG and a hybrid on the run's test split"),
    "report": ("report", "write an HTML report of a run: loss curves, scorecard, retention, comparison, sample answers"),
    "serve": ("serve", "serve a trained run or an exported model over an OpenAI-compatible HTTP API"),
    "export": ("export_cmd", "export a trained run (merged, GGUF, ONNX, int8, adapter) with a parity check"),
}


def subcommand(name: str) -> ModuleType:
    """The module of subcommand ``name`` (imported now)."""
    return importlib.import_module(f"finjust.cli.{SUBCOMMANDS[name][0]}")


def build_parser(full: Iterable[str] = tuple(SUBCOMMANDS)) -> argparse.ArgumentParser:
    """The parser, with the arguments of the subcommands in ``full`` (each one's module imported);
    the others are listed by name and summary."""
    parser = argparse.ArgumentParser(
        prog="finjust",
        description="Fine-tune a pretrained model on domain data, verified by a scorecard.",
        epilog="examples:\n  finjust demo\n  finjust train recipe.yaml train.lr=1e-4\n"
        "  finjust train --resume runs/my-first\n  finjust eval runs/my-first --json score.json\n"
        "  finjust data check recipe.yaml --html report.html\n"
        "  finjust compare runs/my-first --html compare.html\n  finjust report runs/my-first\n"
        "  finjust serve runs/my-first --port 8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in SUBCOMMANDS.items():
        if name in full:
            subcommand(name).add_parser(commands, name, summary)
        else:
            commands.add_parser(name, help=summary)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` asks for: its first item that is not an option."""
    return next((item for item in argv if not item.startswith("-")), None)


#: ``section.key=value`` (or anything ``name=value`` that is no option): a recipe override,
#: whose mistakes the recipe's override parser names (``train=5``: a section must be a mapping)
_OVERRIDE = re.compile(r"^[^-=\s][^=\s]*=")


def _parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking overrides written after an option too (``train r.yaml --json s.json
    train.lr=1e-4``): argparse stops collecting a subcommand's positionals at its first option."""
    args, extra = parser.parse_known_args(argv)
    collected = next((name for name in ("overrides", "targets") if isinstance(getattr(args, name, None), list)), None)
    if extra and collected and all(_OVERRIDE.match(item) for item in extra):
        getattr(args, collected).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: the process arguments); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tolerate_any_encoding()
    with termination_as_interrupt():
        try:
            return _dispatch(argv)
        except SystemExit as done:  # argparse's --help (0) and usage errors (2): a status, as every other end
            if isinstance(done.code, str):  # sys.exit("message"), as Python itself would end it
                tell(done.code)
                return 1
            return done.code if isinstance(done.code, int) else 0


def _dispatch(argv: list[str]) -> int:
    command = _command_in(argv)
    try:  # the subcommand's module, imported here, loads torch and transformers: seconds in which Ctrl-C may come
        parser = build_parser([command] if command in SUBCOMMANDS else [])
    except KeyboardInterrupt as stop:
        tell(stopped(stop))
        return exit_status(stop)
    args = _parse_args(parser, argv)
    module = subcommand(args.command)  # imported by build_parser
    try:
        return int(module.run(args))
    except (FinjustError, OSError) as error:  # OSError: an output path that is a folder, a full disk...
        if args.debug:
            raise
        tell(f"error: {error}")
        return 2
    except KeyboardInterrupt as stop:
        # a subcommand whose work can be continued says how (interrupted_hint); the others start over
        hint = getattr(module, "interrupted_hint", None)
        tell(stopped(stop) + (f"; {hint(args)}" if hint else ""))
        return exit_status(stop)


if __name__ == "__main__":
    sys.exit(main())
