"""The kinds of finding a data-quality check reports, by the name ``data.quality`` uses.

Kept apart from the checks themselves (:mod:`finjust.data.scan_findings`) so that the recipe
can validate ``fail_on`` and ``ignore`` without importing numpy and datasketch.
"""

from __future__ import annotations

#: finding name -> what it means; the order is the report's order
FINDINGS: dict[str, str] = {
    "invalid": "records that fail validation (always stops a run; listed with file, line and field)",
    "empty_answers": "of the invalid records, those whose answer is empty or whitespace only",
    "leakage": "validation or test records whose prompt duplicates or nearly duplicates a training prompt",
    "no_trainable_tokens": "examples left with no trained token after truncation to data.max_length",
    "too_long": "examples longer than data.max_length (handled as data.too_long says)",
    "duplicates": "records that exactly repeat another record of the same split",
    "near_duplicates": "records that nearly repeat another record of the same split (MinHash/LSH)",
    "conflicts": "the same prompt with different answers or labels",
    "pii": "e-mail addresses, phone numbers, card numbers, IBANs, Swedish personal identity numbers",
    "control_tokens": "records whose text holds a special token of the tokenizer (such as <|im_end|>), which "
    "becomes a real turn boundary when tokenized",
    "unread_fields": "text records with other fields, which train on their text alone: a label or an answer "
    "under a name no format reads (lable) makes labelled data raw text",
    "label_imbalance": "classification labels whose counts differ more than tenfold",
    "unseen_labels": "held-out classification records whose label never occurs in training (always stops a run)",
    "single_label": "classification data whose training records all have one label (always stops a run)",
    "case_variant_labels": "classification labels written in more than one case or spacing, such as pos and Pos "
    "(always stops a run: each spelling would train as its own class)",
}

#: findings that fail whatever the recipe says (a label never trained on: the classifier has
#: no output for it, and training refuses such a record; one label: nothing to tell apart; one
#: label in two cases: two classes for one meaning; training refuses both)
ALWAYS_FAIL = ("invalid", "empty_answers", "unseen_labels", "single_label", "case_variant_labels")

#: findings that a recipe may list in ``data.quality.fail_on`` / ``ignore``
GATED = tuple(name for name in FINDINGS if name not in ALWAYS_FAIL)

#: defaults: stop on what makes a run's numbers wrong or trains on nothing, warn on the rest
DEFAULT_FAIL_ON = ("leakage", "no_trainable_tokens")
