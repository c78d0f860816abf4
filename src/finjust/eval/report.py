"""``finjust report RUN_DIR``: everything a run found out, on one self-contained HTML page.

The page reads only the run folder: loss curves from ``metrics.jsonl``, the scorecard with
its intervals and verdicts (and retention, when measured) from ``scorecard.json``, the
comparison table from ``compare.json`` when ``finjust compare`` has run, and sample answers
of base and tuned side by side. Figures are embedded PNGs; all text is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finjust import atomic
from finjust.errors import CheckpointError
from finjust.eval import plots
from finjust.eval.compare import describe_one_off
from finjust.eval.costs import cost_of_steps
from finjust.eval.scorecard import format_baselines
from finjust.html import Cell, Markup, image, number, numeric, page, paragraph, section, table
from finjust.recipe import Recipe, load_recipe
from finjust.train.log import MetricsLog
from finjust.train.run_folder import RunFolder
from finjust.train.saved_json import read_saved_object


@dataclass
class RunRecord:
    """What the report reads from a run folder; missing parts are None (or empty)."""

    folder: RunFolder
    recipe: Recipe
    metrics: list[dict[str, Any]]
    scorecard: dict[str, Any] | None
    comparison: dict[str, Any] | None


def read_run(run_dir: str | Path) -> RunRecord:
    """Read what a report needs; only ``recipe.yaml`` is required (a run still training has the rest partly)."""
    folder = RunFolder(run_dir).require()
    return RunRecord(folder, load_recipe(folder.recipe), MetricsLog(folder.metrics).records(),
                     _json(folder.scorecard), _json(folder.compare))  # fmt: skip


def _json(path: Path) -> dict[str, Any] | None:
    return read_saved_object(path, "run the step that writes it again")


Builder = Callable[[RunRecord, int], Markup | None]


def build_report(run_dir: str | Path, samples: int = 8) -> str:
    """The HTML page for a run folder, as a string."""
    run = read_run(run_dir)
    folder = run.folder
    # each section with the file it reads: a field missing or of another type there is named
    builders: Sequence[tuple[Builder, Path]] = (
        (_training_section, folder.metrics), (_scorecard_section, folder.scorecard),
        (_retention_section, folder.scorecard), (_comparison_part, folder.compare),
        (_samples_section, folder.scorecard),
    )  # fmt: skip
    sections = [part for build, source in builders if (part := _built(build, run, samples, source)) is not None]
    subtitle = f"{run.folder.root} · model {run.recipe.model.name} · method {run.recipe.method.name}"
    return page(f"finjust run report: {run.folder.root.name}", subtitle, sections)


def _built(build: Builder, run: RunRecord, samples: int, source: Path) -> Markup | None:
    try:
        return build(run, samples)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{source} does not hold what finjust writes there ({type(exc).__name__}: {exc}); "
                              "run the step that writes it again") from exc  # fmt: skip


def write_report(run_dir: str | Path, output: str | Path | None = None, samples: int = 8) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    folder = RunFolder(run_dir).require()  # a file given for the folder: said so, not "cannot write into it"
    path = Path(output) if output else folder.report
    atomic.require_writable(path, "give another place for it (finjust report --output PATH)")
    atomic.write_text(path, build_report(run_dir, samples))
    return path


def _training_section(run: RunRecord, samples: int) -> Markup:
    best = (run.scorecard or {}).get("best_step")
    png = plots.loss_curves(run.metrics, best)
    if png is None:
        return section("Training", paragraph("metrics.jsonl has no training steps yet.", "note"))
    cost = cost_of_steps(run.metrics) or {"steps": 0, "seconds": 0.0, "tokens": 0}
    note = f"{cost['steps']} optimizer steps, {cost['seconds']:.0f} s of training, {cost['tokens']:,} tokens."
    if (run.scorecard or {}).get("stopped_early"):
        assert run.scorecard is not None  # stopped_early came from it
        reason = run.scorecard.get("stop_reason")  # unchecked JSON: a damaged file may hold a list here
        note += " Stopped early: " + STOP_REASONS.get(str(reason), "before its last step.")
    return section("Training", image(png, "training and validation loss per step"), paragraph(note, "note"))


#: the loop's ``stop_reason`` values, as the report says them
STOP_REASONS = {
    "patience": "validation loss stopped improving.",
    "forgetting": "retention fell under the forgetting guard's budget.",
}


def _scorecard_section(run: RunRecord, samples: int) -> Markup | None:
    card = run.scorecard
    if card is None:
        return section("Scorecard", paragraph("No scorecard.json yet: the run has not finished.", "note"))
    confidence = card.get("confidence", 0.95)
    comparison = card.get("comparison") or {}
    percent = round(100 * confidence)
    if comparison:
        headers = ["metric", *map(numeric, ("base", f"base {percent}% CI", "tuned", f"tuned {percent}% CI", "change",
                                         f"change {percent}% CI")), "verdict"]  # fmt: skip
        rows = [[name, numeric(number(r["base"])), numeric(_interval(r["base_ci"])),
                 numeric(number(r["tuned"])), numeric(_interval(r["tuned_ci"])),
                 numeric(_signed(r["delta"])), numeric(_interval(r["delta_ci"], signed=True)),
                 Cell(r["verdict"], "verdict")] for name, r in comparison.items()]  # fmt: skip
        classes = [_css(r["verdict"]) for r in comparison.values()]
        body = table(headers, rows, classes)
    else:  # a scorecard written before intervals existed: point values only
        names = list(card.get("base") or {})
        body = table(["metric", numeric("base"), numeric("tuned")], [[n, numeric(number(card["base"][n])),
                     numeric(number((card.get("tuned") or {}).get(n)))] for n in names])  # fmt: skip
    parts = [paragraph(f"On {card.get('n_test', '?')} held-out test examples the model never trained on. "
                       f"Verdicts: 'better' or 'worse' only when the paired bootstrap's {percent}% interval of the "
                       "change excludes zero and a sign test over the questions whose score changed agrees "
                       f"(p below {100 - percent}%). Lower is better for test_loss and perplexity.",
                       "note"), body]  # fmt: skip
    # a classifier's base is its untrained head (chance level): the majority-class baseline says more
    parts += [paragraph(line, "note") for line in format_baselines(card) if line]
    png = plots.metric_intervals(comparison, confidence) if comparison else None
    if png is not None:
        parts.append(image(png, "base vs tuned per metric with confidence intervals"))
    return section("Scorecard", *parts)


def _retention_section(run: RunRecord, samples: int) -> Markup | None:
    """Whatever the retention probe reported: one row per probe, the scalar values as a line."""
    retention = (run.scorecard or {}).get("retention")
    if not isinstance(retention, dict):
        return None
    probes = {k: v for k, v in retention.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in retention.items() if not isinstance(v, dict)}
    columns = list(dict.fromkeys(key for values in probes.values() for key in values))
    parts = [paragraph("General knowledge kept after fine-tuning (retention 1.0: nothing lost). "
                       "Measured on general text and general questions shipped with finjust, not on domain data.",
                       "note")]  # fmt: skip
    if probes:
        rows = [[name, *(numeric(number(values.get(c))) for c in columns)] for name, values in probes.items()]
        parts.append(table(["probe", *map(numeric, columns)], rows))
    if scalars:
        parts.append(paragraph("; ".join(f"{name}: {number(value)}" for name, value in scalars.items())))
    return section("Retention", *parts)


def _comparison_part(run: RunRecord, samples: int) -> Markup | None:
    return comparison_section(run.comparison) if run.comparison else None


def comparison_section(result: dict[str, Any]) -> Markup:
    """The ``finjust compare`` table: quality and cost per row, and each row against base."""
    rows, headline = result["rows"], result["headline"]
    metrics = list(rows[0]["metrics"]) if rows else []
    percent = round(100 * result.get("confidence", 0.95))
    headers = ["row", "what answers", *map(numeric, (*metrics, "prompt tokens", "latency / answer", "peak RSS")),
               "one-off cost", numeric(f"{headline} vs base ({percent}% CI)"), "verdict"]  # fmt: skip
    body, classes = [], []
    for row in rows:
        versus = (row.get("vs_base") or {}).get(headline)
        latency = f"{1000 * row['latency_s']:.0f} ms" if row.get("latency_s") is not None else "–"
        body.append([
            row["name"], row["description"], *(numeric(number(row["metrics"].get(m))) for m in metrics),
            numeric(number(row["prompt_tokens"])), numeric(latency),
            numeric(f"{row['peak_rss_mb']:.0f} MB"), describe_one_off(row.get("one_off") or []),
            numeric(_change(versus) if versus else "–"),
            Cell(versus["verdict"] if versus else "–", "verdict"),
        ])  # fmt: skip
        classes.append(_css(versus["verdict"]) if versus else "")
    settings = result.get("settings", {})
    note = (f"{result['n_test']} held-out test examples; prompt: {settings.get('shots', '?')} training examples; "
            f"RAG: top {settings.get('top_k', '?')} from {settings.get('sources', '?')} "
            f"(encoder {settings.get('encoder', '?')}); device {settings.get('device', '?')}. Latency is the wall "
            "time of batched generation (and retrieval) divided by the answers; peak RSS is the whole process's.")
    parts = [paragraph(note, "note"), table(headers, body, classes)]
    cited = [f"{row['name']} {row['citation_rate']:.0%}" for row in rows if row.get("citation_rate") is not None]
    if cited:
        parts.append(paragraph(f"Answers that cite a given source as [n]: {', '.join(cited)}.", "note"))
    png = plots.row_scores(rows, headline, result.get("confidence", 0.95))
    if png is not None:
        parts.append(image(png, f"{headline} per compare row"))
    return section("Fine-tuning vs prompting vs RAG", *parts)


def comparison_page(result: dict[str, Any]) -> str:
    """A page with the comparison alone (``finjust compare --html``)."""
    return page("finjust compare", str(result.get("run_dir", "")), [comparison_section(result)])


def _samples_section(run: RunRecord, samples: int) -> Markup | None:
    answers = [a for a in (run.scorecard or {}).get("answers", []) if a.get("tuned") is not None]
    if not answers or samples <= 0:
        return None
    # spread over the whole test set rather than its first few questions
    picked = [answers[i * len(answers) // min(samples, len(answers))] for i in range(min(samples, len(answers)))]
    rows = [[a["question"], a["reference"], a.get("base") or "", a["tuned"]] for a in picked]
    note = f"{len(picked)} of {len(answers)} test questions; full list in scorecard.json."
    return section("Sample answers", paragraph(note, "note"),
                   table(["question", "expected", "base", "tuned"], rows, css="answers"))  # fmt: skip


def _interval(bounds: Sequence[float], signed: bool = False) -> str:
    low, high = bounds
    show = _signed if signed else number
    return f"[{show(low)}, {show(high)}]"


def _css(verdict: str) -> str:
    """A verdict as one CSS class name (``no significant change`` -> ``no-significant-change``,
    ``undefined (a score is NaN)`` -> ``undefined``)."""
    return verdict.split(" (")[0].replace(" ", "-")


def _change(versus: dict[str, Any]) -> str:
    return f"{_signed(versus['delta'])} {_interval(versus['delta_ci'], signed=True)}"


def _signed(value: float) -> str:
    return f"{value:+.3g}"
