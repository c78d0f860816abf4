"""``finjust``: fine-tune a pretrained model on your data and prove it got better.

Each subcommand lives in its own module with ``add_parser`` and ``run``; this file only
dispatches and turns a :class:`FinjustError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from finjust.cli import compare, data, demo, eval_cmd, export_cmd, report, serve, train
from finjust.errors import FinjustError

SUBCOMMANDS = {"demo": demo, "data": data, "train": train, "eval": eval_cmd, "compare": compare, "report": report,
               "serve": serve, "export": export_cmd}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
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
    for name, module in SUBCOMMANDS.items():
        module.add_parser(commands, name)
    return parser


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
    args = _parse_args(build_parser(), argv)
    try:
        return int(SUBCOMMANDS[args.command].run(args))
    except (FinjustError, OSError) as error:  # OSError: an output path that is a folder, a full disk...
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a subcommand whose work can be continued says how (interrupted_hint); the others start over
        hint = getattr(SUBCOMMANDS[args.command], "interrupted_hint", None)
        print("interrupted" + (f"; {hint(args)}" if hint else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
