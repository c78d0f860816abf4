"""``finjust compare``: fine-tuning against prompting, RAG and a hybrid, on the run's own test set.

Each row answers the run's held-out test questions one way (a registry entry: which model,
which prompt context) and is scored exactly as the scorecard scores base and tuned: loss of
the reference answer given the row's prompt, generated answers graded by the recipe's
metrics. Beside quality, each row reports what it costs: prompt tokens, latency per answer,
peak memory and, for the tuned rows, the one-off training cost from the run's log. Every
row is compared with ``base`` by a paired bootstrap on the same questions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finjust import atomic
from finjust.data.example import TASK_TEXT, Example
from finjust.data.templates import prompt_ids
from finjust.errors import EvaluationError
from finjust.eval.augment import CONTEXTS, FEW_SHOT_INSTRUCTION, Augmented, ContextInputs, cites_a_source
from finjust.eval.compare_rows import DEFAULT_ROWS, STRATEGIES, Strategy
from finjust.eval.costs import PeakMemory, training_cost
from finjust.eval.evaluate import RunInputs, load_tuned, open_run
from finjust.eval.retrieval import (
    DEFAULT_ENCODER,
    Document,
    Encoder,
    Retriever,
    documents_from_examples,
    documents_from_folder,
    encoder_folder,
    load_encoder,
)  # fmt: skip
from finjust.eval.scorecard import LOSS_METRICS, ModelScores, compare_scores, loss_examples, score_model
from finjust.events import EventHandler, ignore_events
from finjust.models.load import LoadedModel, load_model
from finjust.recipe import Recipe
from finjust.train.max_length import fitted_to_model, model_positions, virtual_tokens
from finjust.train.run import compute_dtype, test_examples, training_dtype


@dataclass
class CompareOptions:
    """What ``finjust compare`` runs; every field has a command-line flag."""

    rows: Sequence[str] = DEFAULT_ROWS
    #: training examples shown to the ``prompt`` row
    shots: int = 3
    #: documents retrieved for the ``rag`` and ``hybrid`` rows
    top_k: int = 3
    #: a folder of .txt/.md domain documents to retrieve from instead of the training records
    docs: str | Path | None = None
    encoder: str = DEFAULT_ENCODER
    instruction: str = FEW_SHOT_INSTRUCTION
    #: score at most this many test examples (default: the recipe's eval.max_examples)
    max_examples: int | None = None
    #: the metric every row is tested against base on (default: the recipe's first eval metric)
    headline: str | None = None


def compare_run(
    run_dir: str | Path,
    options: CompareOptions | None = None,
    on_event: EventHandler = ignore_events,
    encoder: Encoder | None = None,
) -> dict[str, Any]:
    """Score every row of ``options.rows`` on the run's test split; also writes ``compare.json``.

    Args:
        run_dir: a finished run folder (``finjust train``).
        options: rows, k, documents and encoder; the defaults run all five rows.
        on_event: progress callback, as for :func:`finjust.train.run.run_recipe`.
        encoder: a ready encoder for retrieval (tests); default: load ``options.encoder``.

    Returns:
        The comparison as a JSON-ready dict (the same as the file written).

    Raises:
        EvaluationError: bad options or data; CheckpointError: an unusable run folder.
    """
    options = options or CompareOptions()
    _check(options)
    run = open_run(run_dir)
    _headline(run, options)  # a wrong --headline fails before any model is loaded
    atomic.require_writable(run.folder.compare, "the comparison is kept in the run: copy the run folder "
                            "somewhere you can write")  # fmt: skip
    # --max-examples counts from the whole test split: the recipe's eval.max_examples capped run.test
    test = test_examples(run.recipe, run.data, options.max_examples) if options.max_examples else run.test
    if any(example.task == TASK_TEXT for example in test):
        raise EvaluationError(f"{run_dir}: compare puts questions to each strategy; this run's test split holds "
                              "raw text (continued pretraining), which its scorecard scores by perplexity")
    # what retrieval reads, checked before any model is loaded and any row is generated
    retrieves = any(STRATEGIES.get(name).context == "rag" for name in options.rows)
    documents = documents_from_folder(options.docs) if retrieves and options.docs else None
    if retrieves and encoder is None:
        encoder_folder(options.encoder)
    recipe = run.recipe
    loaded = load_model(recipe.model.name, training_dtype(recipe, run.method), recipe.model.device)
    recipe = fitted_to_model(recipe, loaded, on_event)
    autocast = compute_dtype(recipe, loaded)
    retriever = _retriever_factory(run, options, documents, loaded, encoder, on_event)
    inputs = ContextInputs(test, distinct_training(run), options.shots, options.top_k, recipe.train.seed,
                           options.instruction, retriever)  # fmt: skip
    contexts: dict[str, Augmented] = {}
    scores: dict[str, ModelScores] = {}
    rows: dict[str, dict[str, Any]] = {}
    tuned: nn.Module | None = None
    # the adapter is loaded into the base model in place, so every base-model row goes first
    for name in sorted(options.rows, key=lambda n: STRATEGIES.get(n).tuned):
        strategy = STRATEGIES.get(name)
        if strategy.tuned and tuned is None:
            on_event("phase", {"text": f"loading the tuned model from {run.artifact}"})
            tuned, loaded = load_tuned(run, loaded)
        if strategy.context not in contexts:
            contexts[strategy.context] = CONTEXTS.get(strategy.context)(inputs)
        on_event("phase", {"text": f"row {name}: {strategy.description} ({len(test)} questions)"})
        answering = tuned if tuned is not None and strategy.tuned else loaded.model
        scores[name], rows[name] = _score_row(name, strategy, contexts[strategy.context], answering, loaded, recipe,
                                              run, autocast)  # fmt: skip
        if rows[name]["loss_examples"] < len(test):
            on_event("warning", {"text": _uncovered_warning(name, strategy, rows[name]["loss_examples"], len(test))})
    result = _result(run, options, test, loaded, contexts, rows, scores)
    atomic.write_json(run.folder.compare, result)
    return result


def _score_row(
    name: str, strategy: Strategy, augmented: Augmented, answering: nn.Module, loaded: LoadedModel,
    recipe: Recipe, run: RunInputs, autocast: torch.dtype | None,
) -> tuple[ModelScores, dict[str, Any]]:  # fmt: skip
    """One row's scores on its prompts, and the row as the comparison reports it."""
    packing = run.method.supports_packing if strategy.tuned else True
    virtual = virtual_tokens(recipe) if strategy.tuned else 0
    max_length = _max_length(recipe, answering, loaded.tokenizer, strategy.context, virtual)
    with PeakMemory(loaded.device) as memory:
        scores = score_model(answering, loaded.tokenizer, augmented.examples, recipe.eval, max_length, loaded.device,
                             autocast, packing)  # fmt: skip
    return scores, _row(name, strategy, augmented, scores, memory, loaded, run)


def _uncovered_warning(name: str, strategy: Strategy, covered: int, n: int) -> str:
    """Why ``n - covered`` test examples are left out of a row's loss, and what to do about it."""
    if strategy.context == "none":  # cut where the scorecard cuts them
        return (f"row {name}: {n - covered} of {n} test answers begin beyond data.max_length and are left out of "
                "its test_loss and perplexity (raise data.max_length to count them)")
    return (f"row {name}: {n - covered} of {n} prompts are longer than the model's context and left out of its "
            "test_loss and perplexity; their answers, generated past the context, still count in its answer "
            "metrics (lower --top-k or --shots to fit)")


def _check(options: CompareOptions) -> None:
    """Every problem with the options at once.

    Raises:
        EvaluationError: naming each unknown row and each count out of range.
    """
    unknown = [name for name in options.rows if name not in STRATEGIES]
    problems = [f"unknown compare row {name!r}" for name in unknown]
    if unknown:
        problems[-1] += f" (valid compare rows: {', '.join(STRATEGIES.names())})"
    problems += [f"{flag} must be at least 1, got {value}"
                 for flag, value in (("--shots", options.shots), ("--top-k", options.top_k)) if value < 1]  # fmt: skip
    if not options.rows or len(set(options.rows)) != len(options.rows):
        problems.append("choose each row at most once, and at least one row")
    if options.max_examples is not None and options.max_examples < 1:
        problems.append(f"--max-examples must be at least 1, got {options.max_examples}")
    if problems:
        raise EvaluationError("; ".join(problems))


def _headline(run: RunInputs, options: CompareOptions) -> str:
    eval_cfg = run.recipe.eval
    scored = ["test_loss", "perplexity", *(eval_cfg.metrics if eval_cfg.generate else [])]
    headline = options.headline or (scored[2] if len(scored) > 2 else "test_loss")
    if headline not in scored:
        raise EvaluationError(f"--headline {headline!r} is not scored by this run's recipe; "
                              f"choose one of {', '.join(scored)}")  # fmt: skip
    return headline


def distinct_training(run: RunInputs) -> list[Example]:
    """The training split with each record once: source weights above 1 repeat records there,
    which would fill a RAG top-k or a few-shot sample with copies."""
    return list({id(example): example for example in run.data.splits.train}.values())


def _retriever_factory(
    run: RunInputs, options: CompareOptions, documents: list[Document] | None, loaded: LoadedModel,
    encoder: Encoder | None, on_event: EventHandler,
) -> Callable[[], Retriever]:  # fmt: skip
    """Retrieval over ``documents`` (``--docs``), or over the distinct training records, built at first use."""

    def build() -> Retriever:
        chosen = documents or documents_from_examples(distinct_training(run))
        on_event("phase", {"text": f"embedding {len(chosen)} documents with {options.encoder}"})
        return Retriever(chosen, encoder or load_encoder(options.encoder, loaded.device))

    return build


def _max_length(recipe: Recipe, model: nn.Module, tokenizer: Any, context: str, virtual: int) -> int:
    """Plain test prompts are cut where the scorecard cuts them (``data.max_length`` fitted to
    the model); augmented prompts are longer than training examples: the model's whole context,
    less a prompt- or prefix-tuned model's ``virtual`` tokens."""
    if context == "none":
        return recipe.data.max_length
    return max(recipe.data.max_length, (model_positions(model, tokenizer) or 0) - virtual)


def _row(
    name: str, strategy: Strategy, augmented: Augmented, scored: ModelScores,
    memory: PeakMemory, loaded: LoadedModel, run: RunInputs,
) -> dict[str, Any]:  # fmt: skip
    n = len(augmented.examples)
    prompt_tokens = [len(prompt_ids(loaded.tokenizer, e)) for e in augmented.examples]
    sources = augmented.sources or [[] for _ in range(n)]
    answers = scored.answers or ["" for _ in range(n)]
    one_off = [cost for cost in (training_cost(run.folder.metrics) if strategy.tuned else None,
                                 augmented.one_off) if cost]  # fmt: skip
    cited = [cites_a_source(a, len(s)) for a, s in zip(answers, sources, strict=True)]
    # examples whose prompt outgrew the context are left out of the loss; with none left there is no loss
    covered = loss_examples(scored)
    metrics = {m: None if m in LOSS_METRICS and not covered else v for m, v in scored.metrics.items()}
    return {
        "name": name,
        "description": strategy.description,
        "model": "tuned" if strategy.tuned else "base",
        "metrics": metrics,
        "loss_examples": covered,
        "prompt_tokens": round(sum(prompt_tokens) / max(n, 1), 1),
        "latency_s": (scored.generation_seconds + augmented.query_seconds) / n if scored.answers and n else None,
        "peak_rss_mb": round(memory.rss_mb, 1),
        "peak_gpu_mb": round(memory.gpu_mb, 1) if memory.gpu_mb is not None else None,
        "one_off": one_off,
        "citation_rate": sum(cited) / n if augmented.sources is not None and scored.answers and n else None,
        "answers": [{"answer": a, "sources": [hit.document.id for hit in s]}
                    for a, s in zip(answers, sources, strict=True)],  # fmt: skip
    }


def _result(
    run: RunInputs, options: CompareOptions, test: Sequence[Any], loaded: LoadedModel,
    contexts: dict[str, Augmented], rows: dict[str, dict[str, Any]], scores: dict[str, ModelScores],
) -> dict[str, Any]:  # fmt: skip
    eval_cfg = run.recipe.eval
    headline = _headline(run, options)
    for name, row in rows.items():
        row["vs_base"] = _versus_base(scores, name, headline, eval_cfg) if name != "base" and "base" in scores else None
    retrieved = {hit.document.id: hit.document.text for ctx in contexts.values() for hits in (ctx.sources or [])
                 for hit in hits}  # fmt: skip
    return {
        "run_dir": str(run.folder.root),
        "n_test": len(test),
        "headline": headline,
        "confidence": eval_cfg.confidence,
        "settings": {
            "model": run.recipe.model.name, "method": run.recipe.method.name, "device": str(loaded.device),
            "shots": options.shots, "top_k": options.top_k, "encoder": options.encoder,
            "sources": str(options.docs) if options.docs else "training split",
        },  # fmt: skip
        "rows": [rows[name] for name in options.rows],
        "questions": [{"question": e.prompt_text(), "reference": e.reference_answer()} for e in test],
        "documents": retrieved,
    }


def _versus_base(
    scores: dict[str, ModelScores], name: str, headline: str, eval_cfg: Any
) -> dict[str, dict[str, Any]]:
    """Paired-bootstrap comparisons with ``base``, headline metric first.

    The losses are compared over the examples both rows have answer tokens for (a prompt past a
    row's length limit has none), and left out where there are none.
    """
    base, row = scores["base"], scores[name]
    base_items, row_items = {}, {}
    for metric in base.items.keys() & row.items.keys():
        pair = (base.items[metric], row.items[metric])
        if metric in LOSS_METRICS:
            pair = _shared_losses(*pair)
        if pair[0]:
            base_items[metric], row_items[metric] = pair
    comparison = compare_scores(
        ModelScores(base.metrics, base.answers, base_items), ModelScores(row.metrics, row.answers, row_items), eval_cfg
    )
    order = sorted(comparison, key=lambda m: (m != headline, list(base.metrics).index(m)))
    return {m: comparison[m].to_json() for m in order}


def _shared_losses(
    base: list[tuple[float, int]], row: list[tuple[float, int]]
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """Each row's (summed loss, tokens) items with those of examples the other row did not cover
    emptied, pairs kept in place for the bootstrap; two empty lists where no example is shared."""
    both = [bool(b[1] and r[1]) for b, r in zip(base, row, strict=True)]
    if not any(both):
        return [], []
    return ([item if ok else (0.0, 0) for item, ok in zip(base, both)],
            [item if ok else (0.0, 0) for item, ok in zip(row, both)])  # fmt: skip


def _cell(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.4g}"


def format_comparison(result: dict[str, Any]) -> str:
    """Two readable tables: quality per row, then what each row costs and its verdict against base."""
    rows = result["rows"]
    metrics = list(rows[0]["metrics"]) if rows else []
    headline = result["headline"]
    lines = [f"Comparison on {result['n_test']} held-out test examples "
             f"({round(100 * result['confidence'])}% paired bootstrap vs base on {headline})", ""]  # fmt: skip
    widths = {m: max(13, len(m) + 2) for m in metrics}
    lines.append(f"{'row':<8}" + "".join(f"{m:>{widths[m]}}" for m in metrics))
    for row in rows:
        lines.append(f"{row['name']:<8}" + "".join(_cell(row["metrics"][m], widths[m]) for m in metrics))
    lines += ["", f"{'row':<8}{'prompt tok':>11}{'latency':>10}{'peak RSS':>11}  {'one-off cost':<34} vs base"]
    for row in rows:
        latency = f"{1000 * row['latency_s']:.0f} ms" if row["latency_s"] is not None else "-"
        lines.append(f"{row['name']:<8}{row['prompt_tokens']:>11.0f}{latency:>10}{row['peak_rss_mb']:>8.0f} MB  "
                     f"{describe_one_off(row['one_off']):<34} {_verdict(row, headline)}")  # fmt: skip
    return "\n".join(lines)


def describe_one_off(costs: Sequence[dict[str, Any]]) -> str:
    """E.g. ``train 512 s, 41k tok + index 0.4 s``; ``-`` when there is none."""
    parts = []
    for cost in costs:
        if cost["kind"] == "training":
            parts.append(f"train {cost['seconds']:.0f} s, {_thousands(cost['tokens'])} tok")
        else:
            parts.append(f"{cost['kind']} {cost['seconds']:.1f} s")
    return " + ".join(parts) or "-"


def _thousands(count: float) -> str:
    """A token count for a table cell: 565, 3.3k, 41k."""
    if count < 1000:
        return f"{count:.0f}"
    return f"{count / 1000:.1f}k" if count < 10_000 else f"{count / 1000:.0f}k"


def _verdict(row: dict[str, Any], headline: str) -> str:
    versus = (row.get("vs_base") or {}).get(headline)
    if versus is None:
        return "-"
    low, high = versus["delta_ci"]
    return f"{versus['delta']:+.3g} [{low:+.3g}, {high:+.3g}] {versus['verdict']}"
