"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` on an explicit Agg canvas, never through
``pyplot``: no display is needed, nothing stays open between reports, and the global backend
is left alone (``matplotlib.use`` would change it for a notebook that imports finjust).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BASE_COLOUR = "#8c8c8c"
TUNED_COLOUR = "#1f77b4"
VALIDATION_COLOUR = "#d62728"
_DPI = 110


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def loss_curves(records: Sequence[dict[str, Any]], best_step: int | None = None) -> bytes | None:
    """Training loss per optimizer step and validation loss per evaluation; None without steps.

    Args:
        records: the lines of a run's ``metrics.jsonl`` (``type`` ``train`` or ``eval``).
        best_step: the step of the checkpoint that was kept, marked with a dashed line.
    """
    train = [(r["step"], r["loss"]) for r in records if r.get("type") == "train" and "loss" in r]
    evals = [(r["step"], r["val_loss"]) for r in records if r.get("type") == "eval" and "val_loss" in r]
    if not train and not evals:
        return None
    figure = Figure(figsize=(7.5, 3.8))
    axes = figure.subplots()
    if train:
        axes.plot(*zip(*train, strict=True), color=TUNED_COLOUR, linewidth=1.2, label="training loss (per step)")
    if evals:
        axes.plot(*zip(*evals, strict=True), color=VALIDATION_COLOUR, marker="o", linewidth=1.6,
                  label="validation loss (per evaluation)")  # fmt: skip
    if best_step is not None:
        axes.axvline(best_step, color="black", linestyle="--", linewidth=1, label=f"kept checkpoint (step {best_step})")
    axes.set_title("Loss during training")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy per answer token")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return _png(figure)


def metric_intervals(comparison: dict[str, dict[str, Any]], confidence: float = 0.95) -> bytes | None:
    """Base vs tuned per answer metric (all in [0, 1]) with their intervals; None without any."""
    names = [name for name, row in comparison.items() if name not in ("test_loss", "perplexity")]
    if not names:
        return None
    figure = Figure(figsize=(7.5, 0.6 + 0.7 * len(names)))
    axes = figure.subplots()
    for offset, (key, label, colour) in enumerate((("base", "base", BASE_COLOUR), ("tuned", "tuned", TUNED_COLOUR))):
        values = [comparison[n][key] for n in names]
        errors = _error_bars(values, [comparison[n][f"{key}_ci"] for n in names])
        positions = [i + (-0.2 if offset == 0 else 0.2) for i in range(len(names))]  # base above tuned
        bars = axes.barh(positions, values, height=0.38, color=colour, label=label, xerr=errors, capsize=3)
        axes.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=4, fontsize=8)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"score (bars: {round(100 * confidence)}% bootstrap interval)")
    axes.set_title("Answer quality on the held-out test set")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right")
    return _png(figure)


def row_scores(rows: Sequence[dict[str, Any]], metric: str, confidence: float = 0.95) -> bytes | None:
    """One bar per ``finjust compare`` row for ``metric``, with its interval where one was computed."""
    values = [row["metrics"].get(metric) for row in rows]
    if not rows or any(v is None for v in values):
        return None
    intervals = []
    for row, value in zip(rows, values, strict=True):
        versus = (row.get("vs_base") or {}).get(metric)
        intervals.append(versus["tuned_ci"] if versus else _base_interval(rows, metric) or (value, value))
    figure = Figure(figsize=(7.5, 3.4))
    axes = figure.subplots()
    colours = [TUNED_COLOUR if row.get("model") == "tuned" else BASE_COLOUR for row in rows]
    errors = _error_bars(values, intervals)
    bars = axes.bar([row["name"] for row in rows], values, color=colours, yerr=errors, capsize=4)
    axes.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=9)
    top = max(v + e for v, e in zip(values, errors[1], strict=True))
    axes.set_ylim(0, 1.15 * top if top > 0 else 1)  # every metric here is non-negative; zero bars stay visible
    axes.set_title(f"{metric} by way of answering (grey: pretrained model, blue: fine-tuned)")
    axes.set_xlabel("row")
    axes.set_ylabel(f"{metric} ({round(100 * confidence)}% interval)")
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def _base_interval(rows: Sequence[dict[str, Any]], metric: str) -> tuple[float, float] | None:
    """The base row's own interval, as measured in any other row's comparison with it."""
    for row in rows:
        versus = (row.get("vs_base") or {}).get(metric)
        if versus:
            return tuple(versus["base_ci"])  # type: ignore[return-value]
    return None


def _error_bars(values: Sequence[float], intervals: Sequence[Sequence[float]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars: distances below and above each value."""
    below = [max(v - low, 0.0) for v, (low, _) in zip(values, intervals, strict=True)]
    above = [max(high - v, 0.0) for v, (_, high) in zip(values, intervals, strict=True)]
    return [below, above]
