"""``finjust export``: write a run's artifact in one format, check its parity, then move it into place.

The artifact is written into a temp folder beside the output; the format's own runtime
loads it from there and the parity check compares it with the trained model. Only a passing
artifact is renamed into place (with its ``export.json``); a failing one is deleted and an
:class:`~finjust.errors.ExportError` says which numbers missed which thresholds.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from finjust import atomic
from finjust.data.example import TASK_CLASSIFICATION
from finjust.errors import ExportError
from finjust.events import EventHandler, ignore_events
from finjust.export.classifier import export_classifier_run
from finjust.export.parity import ParityReport, check_parity
from finjust.export.registry import RESULT_FILE, ExportFormat, ParityThresholds, get_format
from finjust.export.runtimes import TorchRuntime
from finjust.export.source import ExportSource, open_source
from finjust.export.target import refuse_artifact_folder, refuse_file_in_the_way, refuse_foreign_folder
from finjust.folder_lock import folder_lock
from finjust.models.load import without_progress_bars
from finjust.train.run_folder import RunFolder


def export_run(
    run_dir: str | Path, format_name: str, out: str | Path | None = None, quant: str | None = None,
    prompts: int = 8, max_new_tokens: int | None = None, min_agreement: float | None = None,
    on_event: EventHandler = ignore_events,
) -> dict[str, Any]:  # fmt: skip
    """Export the run in ``run_dir`` as ``format_name`` and check it against the trained model.

    Args:
        run_dir: a finished run folder.
        format_name: a registered format (``merged``, ``gguf``, ``onnx``, ``int8``, ``adapter``).
        out: the output folder; default ``RUN_DIR/export/FORMAT`` (``gguf-QUANT`` for GGUF).
        quant: the format's quantisation type (``--quant``), where it has any.
        prompts: how many test questions the parity check asks.
        max_new_tokens: answer length in the parity check (default the recipe's, at most 64).
        min_agreement: replaces the format's least token agreement (the other thresholds stay).
        on_event: progress callback ``(kind, payload)``.

    Returns:
        What export.json holds: format, paths, size, parity report and how to load the artifact.

    Raises:
        ExportError: an option out of range, ``out`` not a folder, the format cannot take this run
            or quant, or the artifact failed its parity check.
        CheckpointError: ``run_dir`` is not a finished run, or its data changed since.
        UnknownNameError: no format of that name.
    """
    _check_options(prompts, max_new_tokens, min_agreement)
    if RunFolder(run_dir).task() == TASK_CLASSIFICATION:
        given = [flag for flag, value in (("--quant", quant), ("--max-new-tokens", max_new_tokens),
                                          ("--min-agreement", min_agreement)) if value is not None]  # fmt: skip
        if given:  # its parity compares label logits and predicted labels: no answers, no token agreement
            raise ExportError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a "
                              "classification run's export")  # fmt: skip
        target = Path(os.path.abspath(Path(out) if out else Path(run_dir) / "export" / format_name))
        refuse_file_in_the_way(target)
        with folder_lock(target), without_progress_bars():
            refuse_foreign_folder(target, Path(run_dir))
            return export_classifier_run(os.path.abspath(run_dir), format_name, target, prompts)
    fmt = get_format(format_name)
    quant = _check_quant(fmt, quant)
    on_event("phase", {"text": f"opening {run_dir}"})
    source = open_source(run_dir, prompts, max_new_tokens)
    if fmt.needs_merge:
        source.merged()  # raises early, naming the method, when it cannot merge
    # absolute: export.json's paths and load commands must hold from any working folder
    target = Path(os.path.abspath(Path(out) if out else source.run.folder.root / "export" / _label(fmt, quant)))
    refuse_artifact_folder(target, source.run.artifact)
    refuse_file_in_the_way(target)
    thresholds = fmt.thresholds(quant)
    if min_agreement is not None:
        thresholds = dataclasses.replace(thresholds, min_agreement=min_agreement)
    with folder_lock(target), without_progress_bars():
        refuse_foreign_folder(target, source.run.folder.root)
        return _write_checked(fmt, quant, source, target, thresholds, on_event)


def _write_checked(fmt: ExportFormat, quant: str | None, source: ExportSource, target: Path,
                   thresholds: ParityThresholds, on_event: EventHandler) -> dict[str, Any]:  # fmt: skip
    """Write the artifact into a temp folder, check its parity, and move it to ``target`` if it passes."""
    label = _label(fmt, quant)
    atomic.recover(target.parent, name=target.name)  # what a killed export of the same target left
    with atomic.folder(target) as tmp:
        on_event("phase", {"text": f"writing {label}"})
        fmt.write(source, tmp, quant)
        on_event("phase", {"text": f"parity check: {len(source.prompts)} test questions, trained model vs {label}"})
        report = _parity(fmt, source, tmp, thresholds)
        result = _result(fmt, quant, source, target, tmp, report)
        if not report.passed:
            # --min-agreement relaxes only the agreement bar: lossless formats also need every answer exact
            advice = ("Try a less lossy format or type, or accept it with --min-agreement" if thresholds.min_exact < 1
                      else "This format is lossless, so it should reproduce the model exactly: please report it")
            failed = ExportError(f"the {label} export failed its parity check against the trained model: "
                                 f"{'; '.join(report.failures)}; nothing was written to {target}. {advice}")  # fmt: skip
            failed.result = result
            raise failed
        atomic.write_json(tmp / RESULT_FILE, result)
    return result


def _label(fmt: ExportFormat, quant: str | None) -> str:
    return fmt.name if quant is None else f"{fmt.name}-{quant}"


def _check_quant(fmt: ExportFormat, quant: str | None) -> str | None:
    if not fmt.quant_choices:
        if quant is not None:
            raise ExportError(f"--quant does not apply to the {fmt.name} format")
        return None
    quant = (quant or fmt.default_quant or "").lower()
    if quant not in fmt.quant_choices:
        raise ExportError(f"--quant {quant!r} is not a {fmt.name} type; choose one of {', '.join(fmt.quant_choices)}")
    return quant


def _parity(fmt: ExportFormat, source: ExportSource, folder: Path, thresholds: ParityThresholds) -> ParityReport:
    reference = TorchRuntime(source.reference(), {source.stop_id}, source.tokenizer.pad_token_id)
    exported = fmt.open(folder, source)
    try:
        return check_parity(reference, exported, source.prompts, source.conversations, source.max_new_tokens,
                            source.stop_id, thresholds)  # fmt: skip
    finally:
        del exported  # llama.cpp and onnxruntime hold the files open; release before the rename


def _result(fmt: ExportFormat, quant: str | None, source: ExportSource, target: Path, tmp: Path,
            report: ParityReport) -> dict[str, Any]:  # fmt: skip
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    notes = {k: (str(v).replace(str(tmp), str(target)) if isinstance(v, str) else v)
             for k, v in fmt.notes(tmp, quant).items()}  # fmt: skip
    return {
        "format": fmt.name,
        "quant": quant,
        "run": os.path.abspath(source.run.folder.root),
        "method": source.run.method.name,
        "base_model": source.run.recipe.model.name,
        # put before a conversation without a system message, as the run trained and scored
        "system_prompt": source.run.recipe.data.system_prompt,
        "path": str(target),
        "size_bytes": sum(files.values()),
        "files": files,
        "parity": report.to_dict(),
        **notes,
    }


def _check_options(prompts: int, max_new_tokens: int | None, min_agreement: float | None) -> None:
    """The parity check's settings, as the command line checks them (a Python caller's too)."""
    problems = []
    if isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1:
        problems.append(f"prompts={prompts!r} must be a whole number of at least 1")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):  # fmt: skip
        problems.append(f"max_new_tokens={max_new_tokens!r} must be a whole number of at least 1 (or None)")
    if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                      or not 0 <= min_agreement <= 1):  # fmt: skip
        problems.append(f"min_agreement={min_agreement!r} must be a number from 0 to 1 (or None)")
    if problems:
        raise ExportError("; ".join(problems))
