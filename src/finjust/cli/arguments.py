"""argparse value types the subcommands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def refuse_writing_over_inputs(outputs: dict[str, str | None], inputs: list[str | Path], command: str) -> None:
    """``--json`` and ``--html`` may not name the recipe or a data file the command reads (nor a
    file in a data folder, which the next run would read as data).

    Raises:
        RecipeError: naming each option and the input it would replace.
    """
    from finjust.errors import RecipeError

    read = [Path(path).resolve() for path in inputs]
    problems = [f"{option} {path}: the command reads it; write the {option.removeprefix('--')} elsewhere"
                for option, path in outputs.items() if path is not None
                if any(Path(path).resolve().is_relative_to(source) for source in read)]  # fmt: skip
    if problems:
        raise RecipeError(problems, command)


def positive_int(text: str) -> int:
    """An integer of at least 1 (a count of prompts, a batch size)."""
    return _int_within(text, 1, None, "at least 1")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks one)."""
    return _int_within(text, 0, 65535, "a port number from 0 to 65535")


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (how many samples to show, 0 for none)."""
    return _int_within(text, 0, None, "at least 0")


def _int_within(text: str, low: int, high: int | None, wanted: str) -> int:
    value = int(text)
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
    return value


def fraction(text: str) -> float:
    """A number from 0 to 1 (a share of tokens); NaN is refused, as no comparison passes it."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


def output_file(text: str) -> str:
    """A file to write, checked before the work that fills it: not a folder, and not under a file."""
    path = Path(text)
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # a name longer than the filesystem allows
        shortened = text if len(text) <= 80 else f"{text[:80]}..."
        raise argparse.ArgumentTypeError(f"{shortened}: {exc.strerror}") from None
    if is_dir or text.endswith(("/", os.sep)):  # `--json out/`: a folder meant, not a file named out
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {parent} is not writable")
    return text
