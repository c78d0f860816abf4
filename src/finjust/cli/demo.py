"""``finjust demo``: fine-tune the shipped SmolLM2 on the shipped Nordhavn Cycles data."""

from __future__ import annotations

import argparse
from pathlib import Path

from finjust.cli.output import add_json_option, show_scorecard
from finjust.cli.process import show
from finjust.cli.progress import ProgressPrinter
from finjust.cli.train import resume_hint
from finjust.errors import RecipeError
from finjust.recipe import Recipe, load_recipe

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "demo" / "recipe.yaml"


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(
        name,
        help=summary,
        description="LoRA-tunes SmolLM2-135M-Instruct on questions about a fictional company and "
        "scores base vs tuned on held-out questions phrased differently from training.",
        epilog="examples:\n  finjust demo\n  finjust demo --json scorecard.json train.epochs=1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the demo recipe")
    parser.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo, replaced)")
    add_json_option(parser)


def demo_recipe(output: str, overrides: list[str]) -> Recipe:
    """The shipped demo recipe writing to ``output`` (replaced if it holds a run).

    Raises:
        RecipeError: an ``output.*`` override, which ``--output`` would silently replace.
    """
    if given := [o for o in overrides if o.split("=", 1)[0].strip().startswith("output.")]:
        raise RecipeError([f"finjust demo writes its run to --output (default runs/demo, replaced each time), not "
                           f"to {', '.join(given)}: give the folder as --output DIR"], "finjust demo")  # fmt: skip
    return load_recipe(DEMO_RECIPE, overrides).writing_to(output, overwrite=True)


def interrupted_hint(args: argparse.Namespace) -> str:
    """What ``finjust`` prints after "interrupted": the resume command for the demo's folder."""
    return resume_hint(Path(args.output), "run `finjust demo` again")


def run(args: argparse.Namespace) -> int:
    from finjust.train.run import run_recipe  # here: --help needs no torch model code (finjust.cli.main)

    recipe = demo_recipe(args.output, args.overrides)
    result = run_recipe(recipe, on_event=ProgressPrinter())
    show_scorecard(result.scorecard, args.json)
    show(f"\nrun folder: {result.run_dir}")
    return 0
