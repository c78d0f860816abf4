"""The streaming quality scan: a compact fingerprint per record, then findings over all of them.

Records are seen once, in batches, and never kept: each leaves fixed-size fingerprints
(content and prompt hashes, two MinHash band sets, token length, label, location), about
250 bytes whatever its length, so a million records are checked in a few hundred MB. Split
membership is decided after the scan (the pool is split by index, exactly as training
splits it), and every finding is computed from the fingerprints.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from finjust.data.control_tokens import control_tokens, find_control_tokens
from finjust.data.example import TASK_CLASSIFICATION, TASK_PREFERENCE, TASK_TEXT, Example
from finjust.data.lengths import profile_examples
from finjust.data.near_dup import MinHasher, SignatureStore
from finjust.data.pii import find_pii, redact_pii
from finjust.data.problems import Problem

#: origin of a record: the pool (split after the scan) or a split given as a file
POOL, VALIDATION_FILE, TEST_FILE = -1, 1, 2


@dataclass(frozen=True)
class ScanSettings:
    max_length: int = 1024
    too_long: str = "truncate"
    threshold: float = 0.8
    max_listed: int = 20
    redact: bool = False
    #: the column that data.stratify_by or data.group_by reads: a field read, though no format's
    split_field: str | None = None


class _Interner:
    """Small integer ids for repeated values (paths, labels, group keys)."""

    def __init__(self) -> None:
        self.ids: dict[Hashable, int] = {}
        self.values: list[Hashable] = []

    def __call__(self, value: Hashable) -> int:
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.values)
            self.values.append(value)
        return found


def _key(text: str) -> int:
    """A 64-bit hash of text after lower-casing and collapsing whitespace (0 for empty text)."""
    normal = " ".join(text.lower().split())
    return int.from_bytes(hashlib.blake2b(normal.encode(), digest_size=8).digest(), "little") if normal else 0


def prompt_and_answer(example: Example) -> tuple[str, str]:
    """What leakage and conflicts compare: the input (system messages left out, since a shared
    system prompt would make every prompt look alike) and the expected output."""
    prompt = "\n".join(m.content for m in example.prompt_messages() if m.role != "system")
    if example.task == TASK_CLASSIFICATION:
        return prompt, example.label or ""
    if example.task == TASK_TEXT:
        return prompt, ""
    answer = example.chosen if example.task == TASK_PREFERENCE else example.messages[-1:]
    return prompt, "\n".join(m.content for m in answer)


class QualityScan:
    """Accumulates fingerprints of examples (in batches) and problems, for :mod:`finjust.data.scan_findings`."""

    def __init__(self, settings: ScanSettings, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        self.settings, self.tokenizer = settings, tokenizer
        self.hasher = MinHasher()
        self.prompts = SignatureStore(settings.threshold)
        self.contents = SignatureStore(settings.threshold)
        self.paths, self.labels, self.split_values = _Interner(), _Interner(), _Interner()
        self.origin, self.path, self.line = array("b"), array("I"), array("I")
        self.digest = bytearray()
        self.prompt_key, self.answer_key = array("Q"), array("Q")
        self.length, self.first_trained = array("i"), array("i")
        self.label, self.split_value = array("i"), array("i")
        self.tasks: Counter[str] = Counter()
        #: task -> "file:line" of its first record, for a message about mixed tasks
        self.first_of_task: dict[str, str] = {}
        self.problems: list[Problem] = []
        self.problem_kinds: Counter[str] = Counter()
        self.pii: Counter[str] = Counter()
        self.pii_items: list[str] = []
        self.pii_records = 0
        self.control = control_tokens(tokenizer) if tokenizer is not None else ()
        self.control_items: list[str] = []
        self.control_records = 0
        self.unread: Counter[str] = Counter()  # text records' other fields, by name: records holding each
        self.unread_first: dict[str, str] = {}

    @property
    def count(self) -> int:
        return len(self.origin)

    def add_problem(self, problem: Problem) -> None:
        # up to max_listed of each kind: the findings list empty answers apart from other invalid
        # records, so a file's first 20 empty answers must not crowd its malformed lines out
        self.problem_kinds[problem.kind] += 1
        if self.problem_kinds[problem.kind] <= self.settings.max_listed:
            self.problems.append(problem)

    def add(self, examples: Sequence[Example], origin: int, split_values: Sequence[Hashable] | None = None) -> None:
        """Fingerprint a batch of examples from one origin (``POOL`` or a split file).

        Args:
            examples: the batch.
            origin: where they belong.
            split_values: each example's ``stratify_by`` / ``group_by`` value, when one is set.
        """
        for example in examples:
            self._scan_control_tokens(example)
        examples = [self._scan_pii(e) for e in examples]
        profiles = profile_examples(examples, self.tokenizer) if self.tokenizer is not None else None
        prompt_sigs, content_sigs = [], []
        for index, example in enumerate(examples):
            prompt, answer = prompt_and_answer(example)
            prompt_sig = self.hasher.signature(prompt)
            prompt_sigs.append(prompt_sig)
            content_sigs.append(np.minimum(prompt_sig, self.hasher.signature(answer)))
            self.origin.append(origin)
            self.path.append(self.paths(example.source))
            self.line.append(example.line)
            self.digest += hashlib.sha256(example.canonical_json().encode("utf-8")).digest()
            self.prompt_key.append(_key(prompt))
            self.answer_key.append(_key(answer))
            self.length.append(profiles[index].length if profiles else -1)
            self.first_trained.append(profiles[index].first_trained if profiles else -1)
            self.label.append(self.labels(example.label) if example.label is not None else -1)
            self.split_value.append(self.split_values(split_values[index]) if split_values is not None else -1)
            self.tasks[example.task] += 1
            if example.task == TASK_TEXT and example.meta:
                self._note_unread(example)
            if example.task not in self.first_of_task:  # no string built per record
                self.first_of_task[example.task] = f"{example.source}:{example.line}"
        if examples:
            self.prompts.add(np.stack(prompt_sigs))
            self.contents.add(np.stack(content_sigs))

    def _note_unread(self, example: Example) -> None:
        """A text record trains on its text alone: another field may be a label or an answer under
        a name no format reads (``lable``), which would make labelled data raw text."""
        for name in example.meta:
            if name != self.settings.split_field:
                self.unread[name] += 1
                self.unread_first.setdefault(name, f"{example.source}:{example.line}")

    def _scan_pii(self, example: Example) -> Example:
        """Count PII in the example, and return it redacted when the recipe redacts."""
        texts = [m.content for m in (*example.messages, *example.rejected)]
        kinds = Counter(match.kind for text in texts for match in find_pii(text))
        if kinds:
            self.pii_records += 1
            self.pii.update(kinds)
            if len(self.pii_items) < self.settings.max_listed:
                found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                self.pii_items.append(f"{example.source}:{example.line}: {found}")
        return example.with_texts(redact_pii) if self.settings.redact and kinds else example

    def _scan_control_tokens(self, example: Example) -> None:
        """Note a record whose text holds a special token of the tokenizer (see :mod:`finjust.data.control_tokens`)."""
        if not self.control:
            return
        fields = [(m.role, m.content) for m in (*example.messages, *example.rejected)]
        found = [(role, tokens) for role, text in fields if (tokens := find_control_tokens(text, self.control))]
        if found:
            self.control_records += 1
            if len(self.control_items) < self.settings.max_listed:
                holds = "; ".join(f"the {role} text holds {', '.join(map(repr, tokens))}" for role, tokens in found)
                self.control_items.append(f"{example.source}:{example.line}: {holds}")

    def location(self, index: int) -> str:
        return f"{self.paths.values[self.path[index]]}:{self.line[index]}"
