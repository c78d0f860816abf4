"""Answer metrics, one registry entry each: ``metric(prediction, reference) -> float in [0, 1]``.

Exact match and token F1 follow the SQuAD evaluation script's normalisation (lower case,
no punctuation, no articles, single spaces). ROUGE-L is Google's ``rouge-score``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

from rouge_score import rouge_scorer

from finjust.registry import Registry

Metric = Callable[[str, str], float]
METRICS: Registry[Metric] = Registry("metric")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace (as SQuAD does)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


@METRICS.register("exact_match")
def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


@METRICS.register("token_f1")
def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall between normalised answers."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@METRICS.register("rouge_l")
def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), with stemming."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


def score_answers(names: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of each named metric over the answer pairs."""
    scores: dict[str, float] = {}
    for name in names:
        metric = METRICS.get(name)
        values = [metric(p, r) for p, r in zip(predictions, references, strict=True)]
        scores[name] = sum(values) / len(values) if values else 0.0
    return scores
