"""``finjust train RECIPE [key=value ...]`` and ``finjust train --resume RUN_DIR``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from finjust.cli.arguments import refuse_writing_over_inputs
from finjust.cli.output import add_json_option, show_scorecard
from finjust.cli.process import show
from finjust.cli.progress import ProgressPrinter
from finjust.errors import FinjustError, RecipeError
from finjust.recipe import load_recipe, section_help
from finjust.train.run_folder import RunFolder


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(
        name,
        help=summary,
        description="Train from a YAML recipe; dotted overrides change any field.",
        epilog="examples:\n  finjust train recipe.yaml\n  finjust train recipe.yaml train.lr=1e-4 method.r=8\n"
        "  finjust train --resume runs/my-first\n\nrecipe fields:\n" + section_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", nargs="?", help="the YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the recipe")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    add_json_option(parser)


def interrupted_hint(args: argparse.Namespace) -> str:
    """What ``finjust`` prints after "interrupted": the resume command for this run's folder."""
    if args.resume is not None:
        return f"continue with `finjust train --resume {shlex.quote(args.resume)}`"
    try:
        folder = load_recipe(args.recipe, args.overrides).output.dir
    except (FinjustError, OSError):  # a recipe that never loaded: no run folder was made
        return "start again with the same command"
    return resume_hint(Path(folder), "start again with the same command")


def resume_hint(folder: Path, again: str) -> str:
    """How to go on after Ctrl-C stopped a new run in ``folder``: resume it, or, where an
    overwrite stopped before its first checkpoint put the finished run it was to replace
    back, ``again``."""
    if RunFolder(folder).scorecard.is_file():
        return f"{folder} holds the finished run it was to replace; {again}"
    return f"continue with `finjust train --resume {shlex.quote(str(folder))}`"


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.recipe or args.overrides:
            raise RecipeError([f"--resume takes the run folder only; the run's own recipe.yaml is used (to train "
                               f"longer, edit train.max_steps or train.epochs in {Path(args.resume) / 'recipe.yaml'})"],
                              "train")  # fmt: skip
        # the folder given, wherever the run was started: it may have been moved or copied since
        recipe = load_recipe(RunFolder(Path(args.resume)).require().recipe).writing_to(args.resume)
    elif args.recipe:
        recipe = load_recipe(args.recipe, args.overrides)
    else:
        raise RecipeError(["give a recipe file, or --resume RUN_DIR"], "train")
    from finjust.data.check import source_paths
    from finjust.train.run import run_recipe  # here: --help needs no torch model code (finjust.cli.main)

    recipe_file = args.recipe or RunFolder(Path(args.resume)).recipe
    refuse_writing_over_inputs({"--json": args.json}, [recipe_file, *source_paths(recipe.data)], "train")

    result = run_recipe(recipe, resume=bool(args.resume), on_event=ProgressPrinter())
    show_scorecard(result.scorecard, args.json)
    show(f"\nrun folder: {result.run_dir}")
    return 0
