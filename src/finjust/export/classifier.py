"""Export a classification run (an encoder such as MiniLM, or a decoder with a head) to ONNX.

The generative formats check greedy answers; a classifier's parity is its predicted labels
and logits on the run's test texts, each text alone (no padding), trained model in PyTorch
against the graph in onnxruntime. The graph takes ``input_ids`` and ``attention_mask``
(batch and length dynamic) and returns one logit per label; ``config.json`` beside it
names the labels (``id2label``).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from finjust import atomic
from finjust.data.prepare import prepare_data
from finjust.errors import ExportError
from finjust.export.onnx_format import GRAPH, open_session, trace_to_onnx
from finjust.export.registry import RESULT_FILE
from finjust.export.target import refuse_artifact_folder
from finjust.methods.registry import get_method, load_trained
from finjust.models.classifier import load_classifier
from finjust.objectives.classification import LABELS_FILE, LabelMap, tokenize_labelled
from finjust.recipe import load_recipe
from finjust.train.run import test_examples
from finjust.train.run_folder import RunFolder

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: the same fp32 weights, other kernels: every label equal, logits within rounding
MAX_LOGIT_DIFF = 1e-3
CLASSIFIER_FORMATS = ("onnx",)


class _LabelLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # no KV cache: a decoder's would add every layer's keys and values to the graph for nothing
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export_classifier_run(run_dir: str | Path, format_name: str, target: Path, prompts: int = 8) -> dict[str, Any]:
    """Export the classifier in ``run_dir`` as ONNX into ``target`` and check its labels and logits against the
    trained model (called by :func:`finjust.export.run.export_run`, which picks and guards ``target``).

    Raises:
        ExportError: a format other than onnx, or the graph disagrees with the trained model.
    """
    if format_name not in CLASSIFIER_FORMATS:
        raise ExportError(f"a classification run exports as {', '.join(CLASSIFIER_FORMATS)}; "
                          f"--format {format_name} is for generative runs")  # fmt: skip
    folder = RunFolder(run_dir)
    recipe = load_recipe(folder.recipe)
    method = get_method(recipe.method.name)
    if not method.can_merge:
        raise ExportError(f"method {method.name!r} cannot be merged into the base weights")
    refuse_artifact_folder(target, folder.trained_artifact(method))
    labels = _saved_labels(folder.root / LABELS_FILE)
    reference = _trained(recipe, method, folder, labels)
    # merging folds the adapters into the weights in place: a copy, the reference stays as trained.
    # Every method that merges gives back the transformers model (peft's merge_and_unload unwraps it)
    merged = cast("PreTrainedModel", method.merge(copy.deepcopy(reference.model))).float().eval()
    texts = _test_ids(recipe, reference.tokenizer, labels, prompts)
    atomic.recover(target.parent, name=target.name)  # what a killed export of the same target left
    with atomic.folder(target) as tmp:
        _write_graph(merged, tmp / GRAPH, _trace_sample(texts))
        merged.config.save_pretrained(tmp)
        reference.tokenizer.save_pretrained(tmp)
        atomic.write_json(tmp / LABELS_FILE, labels.to_json())
        parity = _parity(reference.model, tmp / GRAPH, texts, int(reference.tokenizer.pad_token_id))
        result = {"format": format_name, "quant": None, "objective": "classification", "run": str(folder.root),
                  "method": method.name, "base_model": recipe.model.name, "path": str(target),
                  "size_bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()), "parity": parity}
        if not parity["passed"]:
            failed = ExportError(f"the {format_name} export failed its parity check against the trained "
                                 f"classifier: label agreement {parity['label_agreement']:.3f} (need 1.0), max "
                                 f"logit diff {parity['max_logit_diff']:.2e} one text at a time and "
                                 f"{parity['batch_logit_diff']:.2e} as one padded batch (need <= "
                                 f"{MAX_LOGIT_DIFF:.0e}); nothing was written to {target}")  # fmt: skip
            failed.result = result  # export --json writes the report of why
            raise failed
        atomic.write_json(tmp / RESULT_FILE, result)
    return result


def _saved_labels(path: Path) -> LabelMap:
    """The run's labels in id order, as training saved them."""
    try:
        return LabelMap(tuple(json.loads(path.read_text(encoding="utf-8"))["labels"]))
    except FileNotFoundError as exc:
        raise ExportError(f"{path} is missing: it maps the classifier's outputs to labels; restore it or train "
                          "again") from exc  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path} is damaged ({type(exc).__name__}: {exc}): it maps the classifier's outputs to "
                          "labels; restore it or train again") from exc  # fmt: skip


def _trained(recipe: Any, method: Any, folder: RunFolder, labels: LabelMap) -> Any:
    """The trained classifier in fp32 on the CPU (a fresh base, its head and trained weights restored)."""
    loaded = load_classifier(recipe.model.name, labels.id2label, "float32", "cpu")
    loaded.model = cast("PreTrainedModel", load_trained(method, loaded.model, folder.artifact(method))).eval()
    return loaded


def _test_ids(recipe: Any, tokenizer: Any, labels: LabelMap, count: int) -> list[list[int]]:
    """The first ``count`` test texts, tokenized as in training."""
    data = prepare_data(recipe.data, recipe.train.seed)
    items, _ = tokenize_labelled(test_examples(recipe, data)[:count], tokenizer, labels, recipe.data.max_length)
    if not items:
        raise ExportError("the run's test split has no text to check the export with")
    return [item.input_ids for item in items]


def _trace_sample(texts: list[list[int]]) -> list[int]:
    """The longest text, doubled if a single token: the graph's length is dynamic from 2 tokens
    (torch.export specialises a length of 1), and a graph so traced answers 1-token texts too."""
    longest = max(texts, key=len)
    return longest if len(longest) > 1 else longest * 2


def _write_graph(model: nn.Module, path: Path, sample: list[int]) -> None:
    ids = torch.tensor([sample], dtype=torch.long)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=8192)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    trace_to_onnx(_LabelLogits(model), (ids, torch.ones_like(ids)), path, shapes)


def _parity(model: nn.Module, graph: Path, texts: list[list[int]], pad_id: int) -> dict[str, Any]:
    """Labels and logits of the graph against the trained model's, text by text, and of the texts
    as one padded batch (the graph takes any batch with its attention mask)."""
    session = open_session(graph)
    same, worst, seconds = 0, 0.0, {"reference": 0.0, "export": 0.0}
    references = []
    for ids in texts:
        started = time.perf_counter()
        with torch.no_grad():
            mask = torch.ones(1, len(ids), dtype=torch.long)
            expected = model(input_ids=torch.tensor([ids]), attention_mask=mask, use_cache=False)
        seconds["reference"] += time.perf_counter() - started
        started = time.perf_counter()
        array = np.asarray([ids], dtype=np.int64)
        got = session.run(None, {"input_ids": array, "attention_mask": np.ones_like(array)})[0][0]
        seconds["export"] += time.perf_counter() - started
        reference = expected.logits[0].float().numpy()
        references.append(reference)
        same += int(reference.argmax() == got.argmax())
        worst = max(worst, float(np.abs(reference - got).max()))
    agreement = same / len(texts)
    batched = _batch_logit_diff(session, references, texts, pad_id)
    return {"runtime": "onnxruntime", "texts": len(texts), "label_agreement": agreement, "max_logit_diff": worst,
            "batch_logit_diff": batched, "reference_seconds": seconds["reference"],
            "export_seconds": seconds["export"],
            "passed": agreement == 1.0 and max(worst, batched) <= MAX_LOGIT_DIFF}  # fmt: skip


def _batch_logit_diff(session: Any, references: list[np.ndarray], texts: list[list[int]], pad_id: int) -> float:
    """The largest difference between each text's reference logits and the graph's for it in one
    right-padded batch, as the classifier trained (pad tokens masked out)."""
    ids = np.full((len(texts), max(map(len, texts))), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, text in enumerate(texts):
        ids[row, : len(text)], mask[row, : len(text)] = text, 1
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return max(float(np.abs(reference - logits).max()) for reference, logits in zip(references, got, strict=True))
