"""``onnx``: the merged model as an ONNX graph from input ids to logits, for onnxruntime.

Exported with ``torch.onnx.export(..., dynamo=True)`` (the exporter torch maintains; it
needs onnxscript) with a dynamic sequence length. The graph has no KV cache inputs: one
call scores a whole context, so generation re-runs the context for each new token
(:func:`~finjust.export.runtimes.greedy_without_cache`). That is fine for scoring and short
answers; for fast long generation use the ``gguf`` export. The folder also holds the
tokenizer (with its chat template) and ``generation_config.json`` (the stop token)::

    session = onnxruntime.InferenceSession("model.onnx")
    logits = session.run(None, {"input_ids": ids})[0]      # ids: int64 [1, seq]
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from finjust.errors import ExportError
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Generation, Runtime, folder_tokenizer, greedy_without_cache

if TYPE_CHECKING:
    from finjust.export.source import ExportSource

GRAPH = "model.onnx"
INSTALL = "pip install --no-deps onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 onnx-ir==1.1.0 ml-dtypes==0.6.0"
#: one graph file up to this size; larger weights go to a side file (protobuf's 2 GiB limit)
SINGLE_FILE_BYTES = 1_800_000_000


class _Logits(nn.Module):
    """input ids -> logits, with no cache: the signature the graph is traced with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def export_onnx(model: nn.Module, path: Path, sample: list[int]) -> None:
    """Write ``model``'s logits graph to ``path``: one sequence (batch 1) of any length."""
    ids = torch.tensor([sample], dtype=torch.long)
    seq = torch.export.Dim("seq", min=1, max=int(getattr(model.config, "max_position_embeddings", 4096)))
    trace_to_onnx(_Logits(model), (ids,), path, {"input_ids": {1: seq}})


def trace_to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                  dynamic_shapes: dict[str, dict[int, Any]]) -> None:  # fmt: skip
    """Trace ``module`` on ``args`` with torch's dynamo exporter and save the graph (inputs named as the shapes' keys)."""
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > SINGLE_FILE_BYTES
    # the exporter reports progress on stdout and warns when it renames axes that share a
    # constraint; library code stays quiet
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, input_names=list(dynamic_shapes), output_names=["logits"],
            dynamic_shapes=dynamic_shapes, external_data=external, verbose=False,
        )  # fmt: skip
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(path), external_data=external)


class OnnxRuntime(Runtime):
    """An exported logits graph in onnxruntime, answering greedily without a cache."""

    name = "onnxruntime"

    def __init__(self, folder: Path) -> None:
        self.session = open_session(folder / GRAPH)
        eos = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
        self.stop_ids = set(eos) if isinstance(eos, list) else {eos}
        self.tokenizer = folder_tokenizer(folder)

    def logits(self, context: list[int]) -> np.ndarray:
        ids = np.asarray([context], dtype=np.int64)
        return self.session.run(None, {"input_ids": ids})[0][0, -1]

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_id: int) -> Generation:
        return greedy_without_cache(self.logits, prompt, max_new_tokens, stop_id)


def open_session(graph: Path) -> Any:
    """An onnxruntime CPU session on ``graph``, logging errors only."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _onnxruntime():  # noqa: ANN202 (an optional module)
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"the onnx export needs onnxruntime, which cannot be imported ({exc}); {INSTALL}") from exc
    return onnxruntime


class Onnx(ExportFormat):
    name = "onnx"
    summary = "merged model as an ONNX logits graph (no KV cache) for onnxruntime"

    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        merged = source.merged()
        try:
            export_onnx(merged, folder / GRAPH, source.prompts[0])
        except ImportError as exc:
            raise ExportError(f"the onnx export needs onnx and onnxscript ({exc}); {INSTALL}") from exc
        merged.generation_config.save_pretrained(folder)
        merged.config.save_pretrained(folder)
        source.tokenizer.save_pretrained(folder)

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        return OnnxRuntime(folder)

    def thresholds(self, quant: str | None) -> ParityThresholds:
        # the same fp32 graph, other kernels: answers identical, logits within rounding
        return ParityThresholds(min_agreement=1.0, min_exact=1.0, max_logit_diff=5e-3)

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        return {"load": f"onnxruntime.InferenceSession({str(folder / GRAPH)!r}); inputs input_ids int64 [1, seq], "
                        "output logits [1, seq, vocab]; no KV cache"}


FORMATS.add(Onnx.name, Onnx())
