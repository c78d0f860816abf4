"""The scorecard: base model against tuned model on the held-out test split.

Teacher-forced loss and perplexity on the reference answers, and generation metrics on the
answers each model writes. Shape of the JSON: ``{"base": {metric: value}, "tuned": {...},
"n_test": N, "answers": [...]}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.data.example import TASK_TEXT, Example
from finjust.data.templates import prompt_ids, tokenize_examples
from finjust.errors import EvaluationError
from finjust.eval.bootstrap import Comparison, fewest_for_a_verdict, paired_bootstrap
from finjust.eval.generate import generate_answers
from finjust.eval.metrics import METRICS, Answers, metric_items
from finjust.objectives.sft import eval_batches, example_losses, perplexity


@dataclass
class ModelScores:
    """One model's aggregate metrics, its answers and the per-example items behind each metric."""

    metrics: dict[str, float]
    answers: list[str]
    items: dict[str, list[Any]] = field(default_factory=dict)
    #: general-knowledge probe results (finjust.eval.forgetting), when measured
    probe: dict[str, float] | None = None
    #: wall seconds of the batched generation of ``answers`` (latency in ``finjust compare``)
    generation_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "answers": self.answers, "items": self.items, "probe": self.probe}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelScores:
        items = {name: [tuple(i) if isinstance(i, list) else i for i in values]
                 for name, values in data.get("items", {}).items()}  # fmt: skip
        return cls(data["metrics"], data["answers"], items, data.get("probe"))


def _loss(items: Sequence[tuple[float, int]]) -> float:
    return sum(s for s, _ in items) / max(sum(c for _, c in items), 1)


def _perplexity(items: Sequence[tuple[float, int]]) -> float:
    return perplexity(_loss(items))


#: aggregates of the teacher-forced metrics, whose items are (summed loss, token count)
LOSS_METRICS = {"test_loss": _loss, "perplexity": _perplexity}


def _document_losses(
    model: nn.Module, test: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int,
    device: torch.device, autocast_dtype: torch.dtype | None, packing: bool,
) -> list[tuple[float, int]]:  # fmt: skip
    """(summed loss, tokens) of each test example over all its windows (raw text longer than
    ``max_length`` is cut into several); (0.0, 0) for an example truncated to no answer token,
    which the loss, a token-weighted mean, then leaves out while every metric keeps an item
    for each example (saved base scores are checked for that on resume)."""
    owners, windows = [], []
    for index, example in enumerate(test):
        pieces = tokenize_examples([example], tokenizer, max_length)[0]
        owners += [index] * len(pieces)
        windows += pieces
    totals: dict[int, tuple[float, int]] = {}
    for owner, (loss, count) in zip(owners, example_losses(model, eval_batches(windows, packing), device,
                                                            autocast_dtype), strict=True):  # fmt: skip
        before = totals.get(owner, (0.0, 0))
        totals[owner] = (before[0] + loss, before[1] + count)
    return [totals.get(index, (0.0, 0)) for index in range(len(test))]


def score_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: Sequence[Example],
    eval_cfg: Any,  # finjust.recipe.EvalSection
    max_length: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    packing: bool = True,
) -> ModelScores:
    """Loss, perplexity and (if ``eval_cfg.generate``) answer metrics of ``model`` on ``test``.

    Raw text (continued pretraining) has no question to answer: a test split holding any gets
    loss and perplexity only, over every ``max_length`` window of each document.
    """
    losses = _document_losses(model, test, tokenizer, max_length, device, autocast_dtype, packing)
    items: dict[str, list[Any]] = {name: losses for name in LOSS_METRICS}
    answers: list[str] = []
    generation_seconds = 0.0
    if _answers_scored(eval_cfg, test):
        prompts = [prompt_ids(tokenizer, example) for example in test]
        started = time.perf_counter()
        answers = generate_answers(
            model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device, autocast_dtype,
            equal_lengths=not packing,  # methods that cannot pack add virtual tokens: no left padding
        )
        generation_seconds = time.perf_counter() - started
        graded = Answers(answers, [e.reference_answer() for e in test], test)
        options = _metric_options(eval_cfg)
        for name in eval_cfg.metrics:
            items[name] = metric_items(name, graded, options.get(name))
    metrics = {name: aggregate(name, values) for name, values in items.items()}
    return ModelScores(metrics, answers, items, generation_seconds=generation_seconds)


def check_metric_inputs(eval_cfg: Any, test: Sequence[Example]) -> None:
    """Refuse test examples that a metric of ``eval_cfg`` cannot read, before any model is scored.

    Raises:
        EvaluationError: naming the metric, its field and the records that lack it.
    """
    if not _answers_scored(eval_cfg, test):
        return
    options = _metric_options(eval_cfg)
    problems = []
    for name in eval_cfg.metrics:
        metric = METRICS.get(name)
        problems += metric.example_problems(test, options.get(name) or metric.options_class())
    if problems:
        raise EvaluationError("; ".join(problems))


def _answers_scored(eval_cfg: Any, test: Sequence[Example]) -> bool:
    """Whether answers are generated and graded (raw text has no question to answer)."""
    return bool(eval_cfg.generate) and not any(example.task == TASK_TEXT for example in test)


def _metric_options(eval_cfg: Any) -> dict[str, Any]:
    return dict(getattr(eval_cfg, "metric_options", None) or {})


def aggregate(name: str, items: Sequence[Any]) -> float:
    """Metric ``name`` over its per-example items: token-weighted for the losses, else the metric's own."""
    if name in LOSS_METRICS:
        return LOSS_METRICS[name](items)
    return METRICS.get(name).aggregate(items)


def compare_scores(base: ModelScores, tuned: ModelScores, eval_cfg: Any) -> dict[str, Comparison]:
    """A paired-bootstrap comparison for every metric both models were scored on."""
    samples = getattr(eval_cfg, "bootstrap_samples", 1000)
    confidence = getattr(eval_cfg, "confidence", 0.95)
    result = {}
    for name in base.items.keys() & tuned.items.keys():
        of_items = LOSS_METRICS.get(name) or METRICS.get(name).aggregate
        higher = name not in LOSS_METRICS and METRICS.get(name).higher_is_better
        result[name] = paired_bootstrap(base.items[name], tuned.items[name], of_items, higher, samples, confidence)
    return result


def build_scorecard(
    test: Sequence[Example], base: ModelScores, tuned: ModelScores, eval_cfg: Any = None
) -> dict[str, Any]:
    """The scorecard as a JSON-ready dict."""
    answers = [
        {
            "question": example.prompt_text(),
            "reference": example.reference_answer(),
            "base": base.answers[i] if base.answers else None,
            "tuned": tuned.answers[i] if tuned.answers else None,
        }
        for i, example in enumerate(test)
    ]
    comparison = compare_scores(base, tuned, eval_cfg)
    order = [name for name in base.metrics if name in comparison]
    return {
        "base": base.metrics,
        "tuned": tuned.metrics,
        "n_test": len(test),
        "loss_examples": loss_examples(tuned),
        "confidence": getattr(eval_cfg, "confidence", 0.95),
        "comparison": {name: comparison[name].to_json() for name in order},
        "answers": answers,
    }


def loss_examples(scores: ModelScores) -> int:
    """How many test examples have answer tokens within ``data.max_length`` (what the loss covers)."""
    return sum(1 for _, count in scores.items.get("test_loss", []) if count)


def format_scorecard(scorecard: dict[str, Any], samples: int = 3) -> str:
    """A readable table of base vs tuned with intervals and verdicts, and a few sample answers."""
    percent = round(100 * scorecard.get("confidence", 0.95))
    lines = [f"Scorecard on {scorecard['n_test']} held-out test examples ({percent}% bootstrap intervals)", ""]
    if isinstance(scorecard["n_test"], int) and scorecard["n_test"] < (fewest := fewest_for_a_verdict(percent / 100)):
        lines[-1:-1] = [f"(a verdict needs the sign test to agree too, which takes at least {fewest} examples that "
                        "changed: with fewer, every verdict is 'no significant change')"]  # fmt: skip
    # a space between columns: a number as wide as its column (+0.000779) must not run into the next
    lines.append(f"{'metric':<14} {'base':>9} {'tuned':>9} {'change':>9}  {'interval of change':<20} verdict")
    for name, row in scorecard.get("comparison", {}).items():
        low, high = row["delta_ci"]
        interval = f"[{low:+.3g}, {high:+.3g}]"
        lines.append(f"{name:<14} {row['base']:>9.4g} {row['tuned']:>9.4g} {row['delta']:>+9.3g}  {interval:<20} "
                     f"{row['verdict']}")  # fmt: skip
    covered = scorecard.get("loss_examples", scorecard["n_test"])
    if covered < scorecard["n_test"]:
        lines.append(f"(test_loss and perplexity over {covered} of {scorecard['n_test']} examples: the others' "
                     "answers begin beyond data.max_length)")  # fmt: skip
    lines += format_baselines(scorecard)
    if "retention" in scorecard:
        lines += ["", _format_retention(scorecard["retention"])]
    for item in scorecard["answers"][:samples]:
        if item["tuned"] is None:
            break
        lines += ["", f"Q: {item['question']}", f"  expected: {item['reference']}"]
        lines += [f"  base:     {_short(item['base'])}", f"  tuned:    {_short(item['tuned'])}"]
    return "\n".join(lines)


def format_baselines(scorecard: dict[str, Any]) -> list[str]:
    """A classification scorecard's note on its base and its majority-class baseline."""
    if "baselines" not in scorecard:
        return []
    majority = scorecard["baselines"]["majority_class"]
    counts = ", ".join(f"{label} {n}" for label, n in scorecard.get("test_labels", {}).items())
    return [
        "",
        f"Note: {scorecard['base_note']}.",
        f"Majority-class baseline (always {majority['label']!r}): accuracy {majority['accuracy']:.4g}, "
        f"macro_f1 {majority['macro_f1']:.4g}; test labels: {counts}",
    ]


def _format_retention(kept: dict[str, Any]) -> str:
    text, qa = kept["general_text"], kept["general_qa"]
    return (
        f"General knowledge kept: retention {kept['retention']:.3f} "
        f"(general-text perplexity {text['base']:.1f} -> {text['tuned']:.1f}, retention {text['retention']:.3f}; "
        f"general questions {qa['base']:.0%} -> {qa['tuned']:.0%} right, retention {qa['retention']:.3f})"
    )


def _short(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    if not text:  # a blank line read as a broken pipeline; the model answered nothing (or whitespace)
        return "(no answer: empty or whitespace only)"
    return text if len(text) <= width else text[: width - 1] + "…"
