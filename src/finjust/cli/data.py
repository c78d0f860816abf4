"""``finjust data check RECIPE_OR_FILE ...``: the data-quality report and gate, before any training."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from finjust import atomic
from finjust.cli.arguments import output_file, refuse_writing_over_inputs
from finjust.cli.process import show
from finjust.cli.progress import ProgressPrinter
from finjust.errors import RecipeError
from finjust.recipe import apply_overrides, data_section_from_dict, load_recipe

_EPILOG = """examples:
  finjust data check recipe.yaml                       the recipe's data, split as training splits it
  finjust data check recipe.yaml --html report.html    also a self-contained HTML page
  finjust data check train.jsonl --test test.jsonl --model smollm2-135m-instruct
  finjust data check a.csv b.parquet data.columns='{output: answer}' --json report.json

exit status: 0 the quality gate passed, 1 it failed (data.quality.fail_on, invalid records), 2 an error"""


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(name, help=summary,
                                 description="Work with training data.")  # fmt: skip
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="report on a recipe's (or files') data and apply the quality gate",
        description="Validate every record, split as training would, and report record counts, token "
        "lengths, duplicates, near-duplicates, leakage, conflicting answers, label balance and PII.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("targets", nargs="+", metavar="RECIPE_OR_FILE",
                       help="a recipe (.yaml), or data files / folders (the training pool); "
                       "then section.key=value overrides")  # fmt: skip
    check.add_argument("--validation", metavar="FILE", help="with data files: the validation file")
    check.add_argument("--test", metavar="FILE", help="with data files: the test file")
    check.add_argument("--model", metavar="NAME", help="tokenizer for token statistics (default: the recipe's model)")
    check.add_argument("--no-tokens", action="store_true", help="skip token statistics (no tokenizer is loaded)")
    check.add_argument("--seed", type=int, help="split seed (default: the recipe's train.seed, else 42)")
    check.add_argument("--json", metavar="PATH", type=output_file, help="also write the report as JSON")
    check.add_argument("--html", metavar="PATH", type=output_file, help="also write the report as one HTML page")


def run(args: argparse.Namespace) -> int:
    # here: --help needs no transformers or datasketch (finjust.cli.main)
    from finjust.data.check import check_data, source_paths
    from finjust.data.report_html import render_html
    from finjust.data.report_text import format_report

    data, seed, model = _data_section(args)
    recipe = [t for t in args.targets if t.endswith((".yaml", ".yml"))][:1]
    refuse_writing_over_inputs({"--json": args.json, "--html": args.html}, [*recipe, *source_paths(data)],
                               "data check")  # fmt: skip
    tokenizer = None
    if model and not args.no_tokens:
        from finjust.models.load import load_tokenizer, resolve_model_folder

        tokenizer = load_tokenizer(resolve_model_folder(model), chat=_needs_chat_template(data))
    printer = ProgressPrinter()
    report = check_data(data, seed, tokenizer, lambda n: printer("phase", {"text": f"read {n:,} records"}), model)
    if args.json:  # the files first: the table's reader may be gone (`| head`)
        atomic.write_json(args.json, report.to_dict())
    if args.html:
        atomic.write_text(args.html, render_html(report))
    show(format_report(report))
    return 0 if report.passed else 1


def _needs_chat_template(data: Any) -> bool:
    """Whether training would render these records with a chat template, decided as `finjust
    train` decides it, from their task (the first readable training record's where data.format
    is auto): classification data are tokenized as plain text, so an encoder without one will do."""
    from finjust.data.example import Example
    from finjust.data.formats import RECORD_FORMATS
    from finjust.data.load import iter_examples
    from finjust.data.sources import parse_sources
    from finjust.errors import DataError
    from finjust.objectives.registry import objective_for_task

    task: str | None = None
    if data.format != "auto":
        task = RECORD_FORMATS.get(data.format).task
    else:
        records = (item for source in parse_sources(data.train)
                   for item in iter_examples(source.path, columns=data.columns, split=source.split))  # fmt: skip
        task = next((item.task for item in records if isinstance(item, Example)), None)
    try:
        return task is None or objective_for_task(task).needs_chat_template
    except DataError:  # no objective trains it (preference records): their turns render as chat
        return True


def _data_section(args: argparse.Namespace) -> tuple[Any, int, str | None]:
    """(data section, seed, model name) from a recipe or from bare files and options."""
    targets = list(args.targets)
    overrides = [t for t in targets if "=" in t and not Path(t).exists()]
    paths = [t for t in targets if t not in overrides]
    if not paths:
        raise RecipeError(["give a recipe or at least one data file"], "data check")
    if paths[0].endswith((".yaml", ".yml")):
        if strays := [path for path in paths[1:] if not Path(path).exists()]:  # `train.lr 1e-4`, `{a: b, c: d}` split
            raise RecipeError([f"{path!r}: no such file, nor an override (section.key=value, one argument: quote "
                               "it where it holds spaces)" for path in strays], "data check")  # fmt: skip
        given = [*paths[1:], *(f"--{key} {getattr(args, key)}" for key in ("validation", "test") if getattr(args, key))]
        if given:
            raise RecipeError([f"a recipe names its own data files; drop {', '.join(given)} (or override "
                               "data.validation / data.test)"], "data check")  # fmt: skip
        recipe = load_recipe(paths[0], overrides)
        seed = args.seed if args.seed is not None else recipe.train.seed
        return recipe.data, seed, args.model or recipe.model.name
    raw: dict[str, Any] = {"train": paths[0] if len(paths) == 1 else paths}
    for key in ("validation", "test"):
        if getattr(args, key):
            raw[key] = getattr(args, key)
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise RecipeError([f"with data files only data.* overrides apply; got {', '.join(bad)}"], "data check")
    raw = apply_overrides({"data": raw}, overrides)["data"]
    return data_section_from_dict(raw, "data check"), args.seed if args.seed is not None else 42, args.model
