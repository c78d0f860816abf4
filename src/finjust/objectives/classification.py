"""Classification: a head over an encoder or decoder, cross-entropy over the labels.

Labels are strings in the data (``text``/``label`` records); a :class:`LabelMap` numbers them
in a fixed order (numerically when every label is an integer, else alphabetically) and is
saved in the run folder and in the model config (``id2label``/``label2id``), so a saved model
predicts label names. Each example is one padded row; the head reads the encoder's pooled
first token, or a decoder's last non-pad token (hence the pad id must be the config's).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.data.example import Example, case_variants
from finjust.data.problems import Problem, combine
from finjust.errors import DataError
from finjust.models.load import autocast

#: file in the run folder (and beside a saved classifier) listing the labels in id order
LABELS_FILE = "labels.json"
#: what the classification scorecard reports (beside the mean test cross-entropy)
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")


#: labels written as integers, which sort by value (2 before 10)
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class LabelMap:
    """The labels in id order: id ``i`` is ``labels[i]``."""

    labels: tuple[str, ...]

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> LabelMap:
        """Every label the training examples use, in a stable order.

        Raises:
            DataError: when the examples hold fewer than two labels.
        """
        found = {e.label for e in examples if e.label is not None}
        if len(found) < 2:
            files = ", ".join(sorted({e.source for e in examples if e.source})) or "the training data"
            raise DataError(f"classification needs at least two labels in the training split; found "
                            f"{sorted(found) or 'none'} in {files}: add records of another class (field 'label')")
        _refuse_case_variants(examples)
        # ASCII digits only: "²".isdigit() holds but int("²") fails; ties ("1", "01") by their text,
        # else the set's order, which differs between processes, would decide the class ids
        numeric = all(_INTEGER.fullmatch(label) for label in found)
        return cls(tuple(sorted(found, key=(lambda label: (int(label), label)) if numeric else str)))

    def id_of(self, label: str) -> int:
        return self.labels.index(label)

    def label_of(self, index: int) -> str:
        return self.labels[index]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def check(self, examples: Sequence[Example], split: str) -> None:
        """Raise for the examples whose labels the training split never uses, all at once.

        Raises:
            DataError: naming the file and line of each such example.
        """
        unseen = [Problem("bad_value", f"label {e.label!r} of this {split} record never occurs in the training split "
                          f"(labels: {', '.join(self.labels)}); the model cannot learn it. Fix the label, add "
                          "training records with it, or set data.stratify_by: label", e.source or "", e.line, "label")
                  for e in examples if e.label not in self.labels]  # fmt: skip
        if unseen:
            raise unseen[0].to_error() if len(unseen) == 1 else combine(unseen)

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels)}


@dataclass(frozen=True)
class LabelledTokens:
    """One example tokenized for classification: its token ids and its label's id."""

    input_ids: list[int]
    label: int


def _refuse_case_variants(examples: Sequence[Example]) -> None:
    """Labels that differ only in case or spacing (``pos``, ``Pos``) would train as separate
    classes, while accuracy, which compares labels case- and spacing-blind, counted them as one:
    write each label one way.

    Raises:
        DataError: naming the variants and where each is first used.
    """
    first: dict[str, Example] = {}
    for example in examples:
        if example.label is not None:
            first.setdefault(example.label, example)
    if clashes := case_variants(first):
        where = "; ".join(", ".join(f"{label!r} ({first[label].source}:{first[label].line})" for label in labels)
                          for labels in clashes)  # fmt: skip
        raise DataError(f"labels differ only in case or spacing: {where}; a classifier learns each spelling as its own class: "
                        "write each label one way in the data")  # fmt: skip


def tokenize_labelled(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, labels: LabelMap, max_length: int
) -> tuple[list[LabelledTokens], int]:
    """Tokenize each example's text (with the tokenizer's special tokens), truncated to ``max_length``.

    Returns:
        The tokenized examples, in order, and how many were truncated.
    """
    encoded = tokenizer([e.prompt_text() for e in examples], truncation=False)["input_ids"]
    items, truncated = [], 0
    for example, ids in zip(examples, encoded, strict=True):
        if len(ids) > max_length:
            # keep the special tokens the tokenizer adds at the end (BERT's [SEP])
            tail = ids[-1:] if ids[-1] in tokenizer.all_special_ids else []
            ids, truncated = ids[: max_length - len(tail)] + tail, truncated + 1
        items.append(LabelledTokens(list(ids), labels.id_of(example.label or "")))
    return items, truncated


@dataclass
class LabelBatch:
    """Examples one per row, right-padded with the model's pad id: shape (B, T), labels (B,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def trained_tokens(self) -> int:
        """What the loss is averaged over: examples (the training loop divides by this)."""
        return int(self.labels.numel())

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> LabelBatch:
        return LabelBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


class LabelBatcher:
    """Pads :class:`LabelledTokens` into a :class:`LabelBatch` (the training loop's ``make_batch``)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[LabelledTokens], packing: bool = False) -> LabelBatch:
        # ``packing`` is ignored: a row holds one example, whose last token a decoder's head reads
        width = max(len(item.input_ids) for item in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
            mask[row, : len(item.input_ids)] = 1
        return LabelBatch(ids, mask, torch.tensor([item.label for item in items], dtype=torch.long))

    def batches(self, items: Sequence[LabelledTokens], size: int = 32) -> list[LabelBatch]:
        """``items`` in order, in batches of ``size`` (evaluation)."""
        return [self(items[i : i + size]) for i in range(0, len(items), size)]


def class_logits(model: nn.Module, batch: LabelBatch) -> torch.Tensor:
    """The head's logits, shape (B, number of labels), in fp32 (no KV cache: a decoder's would
    hold every layer's keys and values for nothing)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return out.logits.float()


def label_loss_sum(model: nn.Module, batch: LabelBatch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's examples, and their count (the loop's loss function)."""
    return F.cross_entropy(class_logits(model, batch), batch.labels, reduction="sum"), batch.trained_tokens


@torch.no_grad()
def predict(
    model: nn.Module, batches: Sequence[LabelBatch], device: torch.device, autocast_dtype: torch.dtype | None
) -> tuple[list[int], list[float]]:
    """The predicted label id and the cross-entropy of every example, in order."""
    predicted: list[int] = []
    losses: list[float] = []
    for batch in batches:
        batch = batch.to(device)
        with autocast(device, autocast_dtype):
            logits = class_logits(model, batch)
        predicted.extend(int(i) for i in logits.argmax(dim=-1).cpu())
        losses.extend(float(x) for x in F.cross_entropy(logits, batch.labels, reduction="none").cpu())
    return predicted, losses


def majority_label(examples: Sequence[Example]) -> str:
    """The most frequent label (ties: the first in sorted order): the majority-class baseline."""
    counts = Counter(e.label or "" for e in examples)
    return min(counts, key=lambda label: (-counts[label], label))
