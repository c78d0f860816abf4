"""Findings computed from a finished :class:`~finjust.data.quality.QualityScan`.

Each check takes the scan and the split code of every record (0 train, 1 validation,
2 test) and returns a :class:`~finjust.data.report.Finding`; all work on numpy arrays of
fingerprints, so their cost does not depend on how long the records are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from finjust.data.example import TASK_TEXT, case_variants
from finjust.data.quality import QualityScan
from finjust.data.report import SPLITS, Finding, TokenStats
from finjust.registry import Registry

Check = Callable[[QualityScan, np.ndarray], Finding]
CHECKS: Registry[Check] = Registry("data check")
TRAIN = 0


def _listed(scan: QualityScan, finding: Finding, text: str) -> None:
    if len(finding.items) < scan.settings.max_listed:
        finding.items.append(text)


def _where(scan: QualityScan, codes: np.ndarray, index: int) -> str:
    return f"{scan.location(index)} ({SPLITS[codes[index]]})"


@CHECKS.register("invalid")
def check_invalid(scan: QualityScan, codes: np.ndarray) -> Finding:
    finding = Finding("invalid", sum(scan.problem_kinds.values()))
    finding.items = [str(p) for p in scan.problems if p.kind != "empty_answer"][: scan.settings.max_listed]
    return finding


@CHECKS.register("empty_answers")
def check_empty_answers(scan: QualityScan, codes: np.ndarray) -> Finding:
    finding = Finding("empty_answers", scan.problem_kinds.get("empty_answer", 0))
    finding.items = [str(p) for p in scan.problems if p.kind == "empty_answer"][: scan.settings.max_listed]
    return finding


@CHECKS.register("duplicates")
def check_duplicates(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Records whose whole content repeats an earlier record of the same split."""
    keys = np.frombuffer(bytes(scan.digest), dtype=np.uint64).reshape(-1, 4)[:, 0]
    finding = Finding("duplicates")
    for split in range(len(SPLITS)):
        members = np.flatnonzero(codes == split)
        _, first, inverse = np.unique(keys[members], return_index=True, return_inverse=True)
        repeats = np.flatnonzero(first[inverse] != np.arange(len(members)))
        finding.count += len(repeats)
        for position in repeats[: scan.settings.max_listed]:
            original = members[first[inverse[position]]]
            _listed(scan, finding, f"{_where(scan, codes, members[position])} repeats {scan.location(original)}")
    return finding


@CHECKS.register("leakage")
def check_leakage(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Held-out records whose prompt equals, or nearly equals, a training prompt."""
    prompt_keys = np.frombuffer(scan.prompt_key, dtype=np.uint64)
    train = np.flatnonzero((codes == TRAIN) & (prompt_keys != 0))
    held = np.flatnonzero((codes != TRAIN) & (prompt_keys != 0))
    finding, leaked = Finding("leakage"), set()
    unique, first = np.unique(prompt_keys[train], return_index=True)
    exact = held[np.isin(prompt_keys[held], unique)]
    matches = train[first[np.searchsorted(unique, prompt_keys[exact])]]
    for index, match in zip(exact.tolist(), matches.tolist()):
        leaked.add(index)
        _listed(scan, finding, f"{_where(scan, codes, index)} has the same prompt as {scan.location(match)}")
    is_held = (codes != TRAIN).astype(np.int8)
    anchors, others, similarity = scan.prompts.similar_pairs(
        scan.settings.threshold, np.concatenate([train, held]), rank=is_held)
    for train_index, held_index, value in zip(anchors.tolist(), others.tolist(), similarity.tolist()):
        if codes[train_index] == TRAIN and codes[held_index] != TRAIN and held_index not in leaked:
            leaked.add(held_index)
            _listed(scan, finding, f"{_where(scan, codes, held_index)} nearly repeats the prompt of "
                    f"{scan.location(train_index)} (similarity {value:.2f})")  # fmt: skip
    finding.count = len(leaked)
    return finding


@CHECKS.register("near_duplicates")
def check_near_duplicates(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Records that nearly repeat another record of their split (exact repeats are duplicates)."""
    keys = np.frombuffer(bytes(scan.digest), dtype=np.uint64).reshape(-1, 4)[:, 0]
    finding, flagged = Finding("near_duplicates"), set()
    anchors, others, similarity = scan.contents.similar_pairs(scan.settings.threshold, np.arange(scan.count),
                                                              bucket=codes)  # fmt: skip
    for first, later, value in zip(anchors.tolist(), others.tolist(), similarity.tolist()):
        if keys[first] == keys[later] or later in flagged:
            continue
        flagged.add(later)
        _listed(scan, finding, f"{_where(scan, codes, later)} ≈ {scan.location(first)} (similarity {value:.2f})")
    finding.count = len(flagged)
    return finding


@CHECKS.register("conflicts")
def check_conflicts(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Records sharing a prompt but not the answer (or label)."""
    finding = Finding("conflicts")
    if set(scan.tasks) == {TASK_TEXT}:
        finding.skipped = "raw text has no answers"
        return finding
    if scan.count < 2:
        return finding
    prompts = np.frombuffer(scan.prompt_key, dtype=np.uint64)
    answers = np.frombuffer(scan.answer_key, dtype=np.uint64)
    order = np.lexsort((answers, prompts))
    prompts_sorted, answers_sorted = prompts[order], answers[order]
    new_prompt = np.r_[True, prompts_sorted[1:] != prompts_sorted[:-1]]
    new_answer = new_prompt | np.r_[True, answers_sorted[1:] != answers_sorted[:-1]]
    group = np.cumsum(new_prompt) - 1
    answers_per_group = np.bincount(group, weights=new_answer)
    conflicting = (answers_per_group[group] > 1) & (prompts_sorted != 0)
    records = order[conflicting]
    finding.count = len(records)
    starts = np.flatnonzero(new_prompt & conflicting)
    for start in starts[: scan.settings.max_listed]:
        members = order[start : start + int(np.sum(group == group[start]))]
        shown = ", ".join(_where(scan, codes, int(m)) for m in members[:4])
        more = f" and {len(members) - 4} more" if len(members) > 4 else ""
        _listed(scan, finding, f"{int(answers_per_group[group[start]])} different answers to one prompt: {shown}{more}")
    return finding


@CHECKS.register("pii")
def check_pii(scan: QualityScan, codes: np.ndarray) -> Finding:
    return Finding("pii", scan.pii_records, list(scan.pii_items))


@CHECKS.register("control_tokens")
def check_control_tokens(scan: QualityScan, codes: np.ndarray) -> Finding:
    finding = Finding("control_tokens", scan.control_records, list(scan.control_items))
    if scan.tokenizer is None:
        finding.skipped = "no tokenizer: give a recipe or --model"
    return finding


def _token_finding(scan: QualityScan, codes: np.ndarray, name: str, flags: np.ndarray, text: str) -> Finding:
    finding = Finding(name, int(flags.sum()))
    if scan.tokenizer is None:
        finding.skipped = "no tokenizer: give a recipe or --model"
    lengths = np.frombuffer(scan.length, dtype=np.int32)
    for index in np.flatnonzero(flags)[: scan.settings.max_listed]:
        _listed(scan, finding, f"{_where(scan, codes, int(index))}: {lengths[index]} tokens{text}")
    return finding


@CHECKS.register("unread_fields")
def check_unread_fields(scan: QualityScan, codes: np.ndarray) -> Finding:
    finding = Finding("unread_fields", max(scan.unread.values(), default=0))
    for name, count in scan.unread.most_common():
        _listed(scan, finding, f"{name!r} in {count} text records (first {scan.unread_first[name]}): if it holds "
                f"labels, map it with data.columns: {{label: {name}}}; if answers, name the records' fields "
                "instruction and output (or prompt and completion)")  # fmt: skip
    return finding


@CHECKS.register("too_long")
def check_too_long(scan: QualityScan, codes: np.ndarray) -> Finding:
    lengths = np.frombuffer(scan.length, dtype=np.int32)
    limit = scan.settings.max_length
    return _token_finding(scan, codes, "too_long", lengths > limit, f" > data.max_length={limit}")


@CHECKS.register("no_trainable_tokens")
def check_no_trainable(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Examples whose first trained token lies past ``max_length``: truncation leaves no answer."""
    first = np.frombuffer(scan.first_trained, dtype=np.int32)
    lengths = np.frombuffer(scan.length, dtype=np.int32)
    limit = scan.settings.max_length
    flags = (first >= limit) & (first < lengths) if scan.settings.too_long == "truncate" else np.zeros(len(first), bool)
    return _token_finding(scan, codes, "no_trainable_tokens", flags,
                          f", the answer starts after data.max_length={limit}")  # fmt: skip


@CHECKS.register("label_imbalance")
def check_labels(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Training labels more than tenfold apart."""
    finding = Finding("label_imbalance")
    counts = label_counts(scan, codes)
    train = counts.get("train", {})
    if not train:
        finding.skipped = "" if scan.labels.values else "no labels"
        return finding
    most, least = max(train.values()), min(train.values())
    if most > 10 * least:
        rare = [label for label, n in train.items() if n * 10 < most]
        finding.count += len(rare)
        _listed(scan, finding, f"train: {most} records of the commonest label, but {', '.join(rare)} "
                f"have under a tenth of that ({most / 10:g})")  # fmt: skip
    return finding


@CHECKS.register("unseen_labels")
def check_unseen_labels(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Validation and test records whose label no training record has (the run would refuse them)."""
    finding = Finding("unseen_labels")
    labels = np.frombuffer(scan.label, dtype=np.int32)
    trained = np.unique(labels[(codes == TRAIN) & (labels >= 0)])
    if not len(trained):
        finding.skipped = "" if scan.labels.values else "no labels"
        return finding
    unseen = np.flatnonzero((codes != TRAIN) & (labels >= 0) & ~np.isin(labels, trained))
    for index in unseen.tolist():
        _listed(scan, finding, f"{_where(scan, codes, index)} field 'label': {scan.labels.values[labels[index]]!r} "
                "never occurs in training; fix the label, add training records with it, or set "
                "data.stratify_by: label")  # fmt: skip
    finding.count = len(unseen)
    return finding


@CHECKS.register("case_variant_labels")
def check_case_variant_labels(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Labels written in more than one case or spacing (``pos``, ``Pos``): a classifier would learn each
    spelling as its own class, so training refuses them."""
    finding = Finding("case_variant_labels")
    if not scan.labels.values:
        finding.skipped = "no labels"
        return finding
    labels = np.frombuffer(scan.label, dtype=np.int32)
    code_of = {str(value): code for code, value in enumerate(scan.labels.values)}
    for variants in case_variants(code_of):
        first_uses = [(value, np.flatnonzero(labels == code_of[value])) for value in variants]
        where = ", ".join(f"{value!r} ({_where(scan, codes, int(uses[0]))})" for value, uses in first_uses if len(uses))
        finding.count += 1
        _listed(scan, finding, f"labels differ only in case or spacing: {where}; write each label one way")
    return finding


@CHECKS.register("single_label")
def check_single_label(scan: QualityScan, codes: np.ndarray) -> Finding:
    """Training records that all carry one label: a classifier has nothing to tell apart."""
    finding = Finding("single_label")
    train = label_counts(scan, codes).get("train", {})
    if not train:
        finding.skipped = "" if scan.labels.values else "no labels"
    elif len(train) == 1:
        (label, count), = train.items()
        finding.count = 1
        _listed(scan, finding, f"train: all {count} records have the label {label!r}; a classifier needs records "
                "of at least two labels to learn")  # fmt: skip
    return finding


def label_counts(scan: QualityScan, codes: np.ndarray) -> dict[str, dict[str, int]]:
    labels = np.frombuffer(scan.label, dtype=np.int32)
    result: dict[str, dict[str, int]] = {}
    for split, name in enumerate(SPLITS):
        values, counts = np.unique(labels[(codes == split) & (labels >= 0)], return_counts=True)
        if len(values):
            result[name] = {str(scan.labels.values[v]): int(n) for v, n in zip(values, counts)}
    return result


def token_stats(scan: QualityScan, codes: np.ndarray, bins: int = 12) -> dict[str, TokenStats]:
    """Length statistics and a histogram per split (empty without a tokenizer)."""
    if scan.tokenizer is None:
        return {}
    lengths = np.frombuffer(scan.length, dtype=np.int32)
    low, top = int(lengths.min(initial=0)), int(lengths.max(initial=1))
    edges = np.linspace(low, max(top, low + bins), bins + 1).round().astype(int)
    result: dict[str, TokenStats] = {}
    for split, name in enumerate(SPLITS):
        values = lengths[codes == split]
        if len(values):
            p50, p90, p99 = (int(np.percentile(values, q)) for q in (50, 90, 99))
            counts, _ = np.histogram(values, bins=edges)
            result[name] = TokenStats(len(values), round(float(values.mean()), 1), p50, p90, p99,
                                      int(values.max()), edges.tolist(), counts.tolist())  # fmt: skip
    return result
