"""Answer metrics, one registry entry each, chosen by name in ``eval.metrics``.

A metric turns each test example into an *item* (usually a score in [0, 1]) and aggregates
items into one number (usually their mean). Keeping items per example is what lets the
scorecard bootstrap a confidence interval for every metric, macro-F1 included.

Exact match and token F1 follow the SQuAD evaluation script's normalisation (lower case,
no punctuation, no articles, single spaces), extended to Unicode: case-folded, and every
punctuation character dropped (chat models write curly quotes and apostrophes); ROUGE-L is
Google's ``rouge-score`` with words in any script; JSON schemas are checked with ``jsonschema``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from finjust.data.example import Example
from finjust.errors import EvaluationError
from finjust.registry import Registry

if TYPE_CHECKING:  # imported where used: it imports nltk and scipy (~0.5 s), which reading a recipe need not
    from rouge_score import rouge_scorer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)  # SQuAD's set: also symbols such as $ and +


@dataclass(frozen=True)
class Answers:
    """What a metric sees: each test example with its reference and the model's answer."""

    predictions: Sequence[str]
    references: Sequence[str]
    examples: Sequence[Example] = ()


@dataclass
class NoOptions:
    """This metric takes no options."""


class Metric:
    """Per-example items and their aggregate; subclasses override :meth:`item` or :meth:`items`."""

    name: ClassVar[str]
    options_class: ClassVar[type] = NoOptions
    higher_is_better: ClassVar[bool] = True

    def items(self, answers: Answers, options: Any) -> list[Any]:
        if problems := self.option_problems(options):  # once, not per answer: a schema check is not free
            raise EvaluationError("; ".join(problems))
        return [self.item(p, r, options) for p, r in zip(answers.predictions, answers.references, strict=True)]

    def item(self, prediction: str, reference: str, options: Any) -> Any:
        raise NotImplementedError

    def option_problems(self, options: Any) -> list[str]:
        """What is wrong with ``options`` for this metric (checked with the recipe, before any run)."""
        return []

    def example_problems(self, examples: Sequence[Example], options: Any) -> list[str]:
        """What this metric cannot read in the test ``examples`` (checked before any model is scored)."""
        return []

    def aggregate(self, items: Sequence[Any]) -> float:
        return sum(items) / len(items) if items else 0.0


METRICS: Registry[Metric] = Registry("metric")


def _register(cls: type[Metric]) -> type[Metric]:
    METRICS.add(cls.name, cls())
    return cls


def normalize_answer(text: str) -> str:
    """Case-fold, drop punctuation and articles, collapse whitespace (as SQuAD does, with any
    Unicode punctuation: "“Paris”" is "paris"); an answer that is nothing but an article (the
    multiple-choice letter "A") keeps it, else it would equal an empty answer."""
    plain = "".join(ch for ch in text.casefold() if ch not in _ASCII_PUNCTUATION and not _is_punctuation(ch))
    return " ".join(_ARTICLES.sub(" ", plain).split()) or " ".join(plain.split())


def _is_punctuation(ch: str) -> bool:
    return not ch.isascii() and unicodedata.category(ch).startswith("P")


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


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


#: Chinese and Japanese characters, which texts do not separate by spaces: one token each
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
_WORD = re.compile(r"[^\W_]+")


class _UnicodeWords:
    """rouge-score's tokenizer, for words in any script: its own keeps ``[a-z0-9]`` alone, so
    "Москва" or "巴黎" had no tokens (ROUGE-L 0 for an identical answer) and "café" became "caf".
    ASCII text gives its tokens exactly: lower case, letter and digit runs, Porter stems of those
    longer than 3 characters (only ASCII words are stemmed: the stemmer is English)."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        words = _WORD.findall(_CJK.sub(r" \1 ", text.lower()))
        return [self._stemmer.stem(w) if len(w) > 3 and w.isascii() else w for w in words]


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWords())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), with stemming."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


@_register
class ExactMatch(Metric):
    name = "exact_match"

    def item(self, prediction: str, reference: str, options: Any) -> float:
        return exact_match(prediction, reference)


@_register
class TokenF1(Metric):
    name = "token_f1"

    def item(self, prediction: str, reference: str, options: Any) -> float:
        return token_f1(prediction, reference)


@_register
class RougeL(Metric):
    name = "rouge_l"

    def item(self, prediction: str, reference: str, options: Any) -> float:
        return rouge_l(prediction, reference)


def _label(text: str) -> str:
    return " ".join(text.strip().lower().split())


@_register
class Accuracy(Metric):
    """Share of answers that equal the reference label (case and spacing ignored)."""

    name = "accuracy"

    def item(self, prediction: str, reference: str, options: Any) -> float:
        return float(_label(prediction) == _label(reference))


@_register
class MacroF1(Metric):
    """F1 per reference label, averaged with equal weight (a label never predicted scores 0)."""

    name = "macro_f1"

    def item(self, prediction: str, reference: str, options: Any) -> tuple[str, str]:
        return _label(prediction), _label(reference)

    def aggregate(self, items: Sequence[tuple[str, str]]) -> float:
        # eight lines of arithmetic: not worth scikit-learn (and SciPy) as dependencies
        labels = sorted({reference for _, reference in items})
        scores = []
        for label in labels:
            tp = sum(1 for p, r in items if p == label and r == label)
            predicted = sum(1 for p, _ in items if p == label)
            actual = sum(1 for _, r in items if r == label)
            scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
        return sum(scores) / len(scores) if scores else 0.0


@dataclass
class FactRecallOptions:
    field: str = field(default="facts", metadata={"help": "record field listing the facts each answer must contain"})


@_register
class FactRecall(Metric):
    """Share of an example's required facts (strings in a record field) found in the answer."""

    name = "fact_recall"
    options_class = FactRecallOptions

    def example_problems(self, examples: Sequence[Example], options: FactRecallOptions) -> list[str]:
        bad = [f"{e.source}:{e.line} has {_short(e.meta.get(options.field))}" for e in examples
               if not _is_fact_list(e.meta.get(options.field))]  # fmt: skip
        if not bad:
            return []
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return [f"fact_recall needs a list of strings in field {options.field!r} of every test record; "
                f"{', '.join(bad[:5])}{more}"]  # fmt: skip

    def items(self, answers: Answers, options: FactRecallOptions) -> list[float]:
        if problems := self.example_problems(answers.examples, options):
            raise EvaluationError(problems[0])
        scores = []
        for prediction, example in zip(answers.predictions, answers.examples, strict=True):
            facts = example.meta[options.field]
            # whole words of the normalised answer: "10" is not found in "100", nor "cat" in "concatenate"
            answer = f" {normalize_answer(prediction)} "
            found = sum(1 for fact in facts if f" {normalize_answer(fact)} " in answer)
            scores.append(found / len(facts) if facts else 1.0)
        return scores


def _is_fact_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(fact, str) for fact in value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class FormatOptions:
    regex: str | None = field(default=None, metadata={"help": "a regular expression the answer must match (search)"})
    json_schema: dict | None = field(default=None, metadata={"help": "a JSON schema the answer, parsed as JSON, must satisfy"})


@_register
class FormatAdherence(Metric):
    """Share of answers that match the regex and/or parse as JSON satisfying the schema."""

    name = "format"
    options_class = FormatOptions

    def option_problems(self, options: FormatOptions) -> list[str]:
        if options.regex is None and options.json_schema is None:
            return ["the format metric needs eval.metric_options.format.regex or .json_schema"]
        problems = []
        if options.regex is not None:
            try:
                re.compile(options.regex)
            except re.error as exc:
                problems.append(f"eval.metric_options.format.regex: {options.regex!r} is not a regular expression "
                                f"({exc})")  # fmt: skip
        if options.json_schema is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(options.json_schema).check_schema(options.json_schema)
            except jsonschema.SchemaError as exc:
                problems.append(f"eval.metric_options.format.json_schema: not a JSON schema ({exc.message})")
        return problems

    def item(self, prediction: str, reference: str, options: FormatOptions) -> float:
        if options.regex is not None and not re.search(options.regex, prediction):
            return 0.0
        return float(options.json_schema is None or _satisfies_schema(prediction, options.json_schema))


def _not_json(constant: str) -> None:
    """Python's json reads NaN and Infinity, which JSON (RFC 8259) does not have."""
    raise ValueError(f"{constant} is not JSON")


def _satisfies_schema(text: str, schema: dict) -> bool:
    import json

    import jsonschema

    try:
        jsonschema.validate(json.loads(text, parse_constant=_not_json), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@dataclass
class BrandMentionOptions:
    names: list[str] = field(default_factory=list, metadata={"help": "brand or product names to look for"})


@_register
class BrandMention(Metric):
    """Share of answers that mention at least one of the brand or product names."""

    name = "brand_mention"
    options_class = BrandMentionOptions

    def option_problems(self, options: BrandMentionOptions) -> list[str]:
        if not options.names:
            return ["brand_mention needs eval.metric_options.brand_mention.names"]
        if not all(isinstance(name, str) and name.strip() for name in options.names):
            return ["eval.metric_options.brand_mention.names holds an empty name, which every answer would mention"]
        return []

    def item(self, prediction: str, reference: str, options: BrandMentionOptions) -> float:
        # whole words, as fact_recall matches: the brand "Sky" is not in "skyline"
        return float(any(mentions(prediction, name.strip()) for name in options.names))


def mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase`` appears in ``text`` as whole words, case ignored."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


# 's is a contraction only after these words ("it's"); elsewhere it is a possessive ("the company's")
_CONTRACTION = re.compile(r"\b(\w+['’](re|ve|ll|d|t|m)|(it|that|what|there|here|he|she|who|where|when|how|let)"
                          r"['’]s)\b", re.IGNORECASE)  # fmt: skip
_INFORMAL = re.compile(r"\b(gonna|wanna|gotta|kinda|hey|yeah|yep|nope|lol|btw|asap|ok)\b", re.IGNORECASE)


@dataclass
class BrandVoiceOptions:
    required: list[str] = field(default_factory=list, metadata={"help": "phrases every answer must contain"})
    banned: list[str] = field(default_factory=list, metadata={"help": "phrases no answer may contain"})
    formality: str | None = field(default=None, metadata={
        "help": "'formal': no contractions and no informal words (gonna, hey, yeah, ...); null: not checked",
        "choices": (None, "formal")})  # fmt: skip


@_register
class BrandVoice(Metric):
    """Share of answers that keep the voice: required phrases in, banned phrases out, formality."""

    name = "brand_voice"
    options_class = BrandVoiceOptions

    def option_problems(self, options: BrandVoiceOptions) -> list[str]:
        key = "eval.metric_options.brand_voice"
        if not (options.required or options.banned or options.formality):
            return [f"brand_voice needs {key}.required, .banned or .formality, else every answer keeps the voice"]
        return [f"{key}.{name} holds an empty phrase, which {what}"
                for name, what in (("required", "every answer contains"), ("banned", "fails every answer"))
                if not all(isinstance(p, str) and p.strip() for p in getattr(options, name))]  # fmt: skip

    def item(self, prediction: str, reference: str, options: BrandVoiceOptions) -> float:
        if not prediction.strip():  # no answer keeps no voice (else a model that stops at once scored 1.0)
            return 0.0
        text = prediction.lower()
        if any(phrase.lower() not in text for phrase in options.required):
            return 0.0
        if any(phrase.lower() in text for phrase in options.banned):
            return 0.0
        if options.formality == "formal" and (_CONTRACTION.search(prediction) or _INFORMAL.search(prediction)):
            return 0.0
        return 1.0


def metric_items(name: str, answers: Answers, options: Any = None) -> list[Any]:
    """Per-example items of the metric ``name`` (default options when none are given)."""
    metric = METRICS.get(name)
    return metric.items(answers, options if options is not None else metric.options_class())
