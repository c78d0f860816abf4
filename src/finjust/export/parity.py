"""The parity check every export ends with: the artifact, in its own runtime, against the trained model.

Both answer the same prompts (the first questions of the run's test split) greedily. Measured:

- **prompts alike**: the fraction of those questions that the artifact's own chat template
  and tokenizer turn into exactly the trained model's prompt tokens (both runtimes are then
  given the trained model's tokens, so a broken vocabulary shows here, not in the answers);
- **agreement**: per answer, the tokens equal up to the first divergence over the longer
  answer's length, averaged over prompts (1.0: every answer identical);
- **exact**: the fraction of answers identical token for token;
- **max logit diff**: the largest absolute logit difference over the steps where both saw
  the same context (up to and including the first divergent token);
- **stops**: how many answers ended with the end-of-turn token, in each runtime, and whether
  the artifact declares that token as its stop token;
- **seconds** each runtime took, and the artifact's size on disk.

A check fails when a number misses the format's :class:`ParityThresholds`, the artifact
encodes a prompt differently, or it does not declare the end-of-turn token as its stop token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from finjust.data.example import Message
from finjust.export.registry import ParityThresholds
from finjust.export.runtimes import Generation, Runtime


@dataclass
class ParityReport:
    """The parity of one exported artifact against the trained model."""

    runtime: str
    prompts: int
    #: the share of prompts the artifact encodes to the trained model's tokens (None: it has no tokenizer)
    prompts_alike: float | None
    #: where the first prompt it encodes differently parts from the trained model's
    prompt_difference: str | None
    agreement: float
    exact: float
    max_logit_diff: float | None
    stops_reference: int
    stops_export: int
    stop_token_declared: bool
    reference_seconds: float
    export_seconds: float
    reference_tokens: int
    export_tokens: int
    thresholds: ParityThresholds
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def agreement(a: list[int], b: list[int]) -> float:
    """Tokens equal up to the first divergence, over the longer answer's length (two empty answers agree)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else common_prefix(a, b) / longest


def logit_diff(reference: Generation, exported: Generation) -> float | None:
    """The largest absolute logit difference over the steps both runtimes took from the same context."""
    if not reference.logits or not exported.logits:
        return None
    steps = min(common_prefix(reference.tokens, exported.tokens) + 1, len(reference.logits), len(exported.logits))
    worst = 0.0
    for ref, exp in zip(reference.logits[:steps], exported.logits[:steps], strict=True):
        width = min(ref.shape[-1], exp.shape[-1])  # llama.cpp may pad the vocabulary
        worst = max(worst, float(np.max(np.abs(ref[:width].astype(np.float64) - exp[:width]))))
    return worst


def prompts_alike(exported: Runtime, conversations: Sequence[Sequence[Message]],
                  prompts: list[list[int]]) -> tuple[float | None, str | None]:  # fmt: skip
    """The share of ``conversations`` the artifact renders and tokenizes to ``prompts`` (the
    trained model's), and where the first one that differs parts from it."""
    alike, difference = 0, None
    for number, (messages, expected) in enumerate(zip(conversations, prompts, strict=True), start=1):
        try:
            own = exported.prompt_ids(messages)
        except Exception as exc:  # templates and tokenizers raise their own types: a difference like any other
            own, found = [], f"prompt {number}: {type(exc).__name__}: {exc}"
        else:
            if own is None:
                return None, None
            at = common_prefix(own, expected)
            found = f"prompt {number}, token {at}: {own[at:at + 3]} where the trained model has {expected[at:at + 3]}"
        if own == expected:
            alike += 1
        elif difference is None:
            difference = found
    return alike / len(prompts), difference


def check_parity(
    reference: Runtime, exported: Runtime, prompts: list[list[int]], conversations: Sequence[Sequence[Message]],
    max_new_tokens: int, stop_id: int, thresholds: ParityThresholds,
) -> ParityReport:  # fmt: skip
    """Ask both runtimes ``prompts`` greedily and compare, judging the result by ``thresholds``;
    ``conversations`` are what the prompts were rendered from, for the artifact to encode itself."""
    pairs = [(reference.greedy(p, max_new_tokens, stop_id), exported.greedy(p, max_new_tokens, stop_id))
             for p in prompts]  # fmt: skip
    diffs = [d for d in (logit_diff(ref, exp) for ref, exp in pairs) if d is not None]
    alike, difference = prompts_alike(exported, conversations, prompts)
    report = ParityReport(
        runtime=exported.name,
        prompts=len(prompts),
        prompts_alike=alike,
        prompt_difference=difference,
        agreement=float(np.mean([agreement(ref.tokens, exp.tokens) for ref, exp in pairs])),
        exact=float(np.mean([ref.tokens == exp.tokens for ref, exp in pairs])),
        max_logit_diff=max(diffs) if diffs else None,
        stops_reference=sum(1 for ref, _ in pairs if ref.tokens[-1:] == [stop_id]),
        stops_export=sum(1 for _, exp in pairs if exp.tokens[-1:] == [stop_id]),
        stop_token_declared=stop_id in exported.stop_ids,
        reference_seconds=sum(ref.seconds for ref, _ in pairs),
        export_seconds=sum(exp.seconds for _, exp in pairs),
        reference_tokens=sum(len(ref.tokens) for ref, _ in pairs),
        export_tokens=sum(len(exp.tokens) for _, exp in pairs),
        thresholds=thresholds,
    )
    report.failures = _failures(report, stop_id)
    return report


def _failures(report: ParityReport, stop_id: int) -> list[str]:
    limits, found = report.thresholds, []
    if report.prompts_alike is not None and report.prompts_alike < 1:
        differ = round((1 - report.prompts_alike) * report.prompts)
        found.append(f"its own chat template and tokenizer encode {differ} of {report.prompts} prompts differently "
                     f"from the trained model ({report.prompt_difference})")  # fmt: skip
    if report.agreement < limits.min_agreement:
        found.append(f"token agreement {report.agreement:.3f} < {limits.min_agreement}")
    if report.exact < limits.min_exact:
        found.append(f"identical answers {report.exact:.3f} < {limits.min_exact}")
    if limits.max_logit_diff is not None and report.max_logit_diff is not None \
            and report.max_logit_diff > limits.max_logit_diff:  # fmt: skip
        found.append(f"max logit difference {report.max_logit_diff:.2e} > {limits.max_logit_diff:.0e}")
    if not report.stop_token_declared:
        found.append(f"the artifact does not declare the end-of-turn token {stop_id} as a stop token")
    return found
