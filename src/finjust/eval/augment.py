"""Prompts for the ``finjust compare`` baselines: the test questions, augmented one way each.

Each context is a registry entry that turns the test examples into new examples whose prompt
carries the augmentation and whose last message is still the reference answer, so the
scorecard's own scoring (loss of the reference given the prompt, generated answers, metrics)
applies to them unchanged:

- ``none``: the question as it is (zero-shot, and the tuned model as trained);
- ``few_shot``: a system prompt and k training examples as earlier chat turns;
- ``rag``: the k training records (or document chunks) most similar to the question, numbered
  in the prompt, with an instruction to cite them as [1], [2].

Example answers shown as context carry ``weight=0`` so they are never scored as answers.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finjust.data.example import TASK_CHAT, Example, Message
from finjust.errors import EvaluationError
from finjust.eval.retrieval import Hit, Retriever
from finjust.registry import Registry

FEW_SHOT_INSTRUCTION = (
    "You answer customers' questions about our products and company. "
    "Answer in the same style as the example answers: short, factual and friendly."
)
RAG_INSTRUCTION = (
    "Answer the question using the numbered sources. Cite every source you use by its number in "
    "square brackets, like [1] or [2]. If the sources do not answer the question, say so."
)
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass
class ContextInputs:
    """What a context may draw on: the test and training splits, and a lazily built retriever."""

    test: Sequence[Example]
    train: Sequence[Example]
    shots: int = 3
    top_k: int = 3
    seed: int = 42
    instruction: str = FEW_SHOT_INSTRUCTION
    #: called at most once, by the ``rag`` context: building the index costs an encoder load
    retriever: Callable[[], Retriever] | None = None


@dataclass
class Augmented:
    """The augmented test examples, what was retrieved for each, and the cost of augmenting."""

    examples: list[Example]
    #: per test example, the retrieved documents in prompt order ([1] first); None without retrieval
    sources: list[list[Hit]] | None = None
    #: wall seconds of per-question work before generation (retrieval), summed over the questions
    query_seconds: float = 0.0
    #: one-off cost before the first question, e.g. {"kind": "index", "seconds": s, "documents": n}
    one_off: dict[str, Any] | None = None


Context = Callable[[ContextInputs], Augmented]
CONTEXTS: Registry[Context] = Registry("prompt context")


@CONTEXTS.register("none")
def no_context(inputs: ContextInputs) -> Augmented:
    """The test questions as they are."""
    return Augmented(list(inputs.test))


@CONTEXTS.register("few_shot")
def few_shot_context(inputs: ContextInputs) -> Augmented:
    """A system prompt and ``shots`` training examples (a seeded sample, the same for every question)."""
    shots = random.Random(inputs.seed).sample(list(inputs.train), min(inputs.shots, len(inputs.train)))
    turns: list[Message] = []
    for shot in shots:
        turns += [_as_context(m) for m in shot.prompt_messages() if m.role != "system"]
        turns.append(Message("assistant", shot.reference_answer(), weight=0))
    examples = [augment_example(e, inputs.instruction, turns) for e in inputs.test]
    return Augmented(examples)


@CONTEXTS.register("rag")
def rag_context(inputs: ContextInputs) -> Augmented:
    """The ``top_k`` most similar documents to each question, numbered in the user message."""
    if inputs.retriever is None:
        raise EvaluationError("the rag context needs a retriever")
    retriever = inputs.retriever()
    started = time.perf_counter()
    hits = retriever.search([e.prompt_text() for e in inputs.test], inputs.top_k)
    seconds = time.perf_counter() - started
    examples = [
        augment_example(e, RAG_INSTRUCTION, [], question=_with_sources(e.prompt_text(), found))
        for e, found in zip(inputs.test, hits, strict=True)
    ]
    one_off = {"kind": "index", "seconds": retriever.index_seconds, "documents": len(retriever.documents)}
    return Augmented(examples, hits, seconds, one_off)


def augment_example(
    example: Example, instruction: str, turns: Sequence[Message], question: str | None = None
) -> Example:
    """``example`` with ``instruction`` added to its system prompt and ``turns`` before its question.

    Args:
        example: a chat test example (its last message is the reference answer).
        instruction: appended to the example's own system prompt (or the whole system prompt).
        turns: earlier chat turns put between the system prompt and the example's own turns.
        question: replaces the text of the example's last user message when given (or is
            asked after its prompt where it has none: an answer to a system prompt alone).

    Returns:
        A copy whose prompt is augmented and whose last message is the same reference answer.
    """
    if example.task != TASK_CHAT:
        raise EvaluationError(f"compare needs question-answer test data; {example.source}:{example.line} is a "
                              f"{example.task!r} record")  # fmt: skip
    prompt = list(example.prompt_messages())
    system = [m.content for m in prompt if m.role == "system"]
    own = [m for m in prompt if m.role != "system"]
    if question is not None:
        asked = [i for i, m in enumerate(own) if m.role == "user"]
        if asked:
            own[asked[-1]] = Message("user", question)
        else:
            own.append(Message("user", question))
    messages = (Message("system", "\n\n".join([*system, instruction])), *turns, *own, example.messages[example.answer_index])
    return dataclasses.replace(example, messages=messages)


def _as_context(message: Message) -> Message:
    return Message(message.role, message.content, weight=0)


def _with_sources(question: str, hits: Sequence[Hit]) -> str:
    numbered = "\n\n".join(f"[{n}] {hit.document.text}" for n, hit in enumerate(hits, start=1))
    return f"Sources:\n{numbered}\n\nQuestion: {question}"


def cites_a_source(answer: str, n_sources: int) -> bool:
    """True when ``answer`` cites at least one of the sources it was given, as ``[n]``."""
    return any(1 <= int(n) <= n_sources for n in _CITATION.findall(answer))
