"""``gguf``: the merged model as one GGUF file for llama.cpp, with an Ollama ``Modelfile`` beside it.

``--quant`` picks the weight type: ``f32``, ``f16``, ``bf16`` and ``q8_0`` are written by
:mod:`finjust.export.gguf_writer`; ``q4_k_m``, ``q5_k_m``, ``q6_k`` and ``q4_0`` are made from
the f16 file by llama.cpp's own quantiser (``llama_model_quantize``, through llama-cpp-python),
which also picks the per-tensor mix that the ``_M`` types mean. The parity check runs the
file in llama-cpp-python, so llama-cpp-python must be installed (see the Makefile for the
build flags this CPU needs). Use it with::

    llama-cli -m model-q8_0.gguf -cnv            # llama.cpp
    ollama create mymodel -f Modelfile           # Ollama
    Llama(model_path="model-q8_0.gguf")          # llama-cpp-python
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from finjust.data.example import Message
from finjust.errors import ExportError
from finjust.export.gguf_writer import OUTTYPES, require_llama, write_gguf
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Generation, Runtime

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

    from finjust.export.source import ExportSource

INSTALL = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
           '-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF" pip install --no-deps llama-cpp-python==0.3.36')  # fmt: skip
#: types llama.cpp's quantiser makes from the f16 file, by llama-cpp-python's LLAMA_FTYPE_* name
LLAMA_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}  # fmt: skip
#: least token agreement per type. Measured on the demo run (SmolLM2-135M, 8 questions, 32
#: tokens; README, Export): f16 1.00, q8_0 0.61, q4_k_m 0.35. A small model's greedy answers
#: part at near ties once weights are rounded, so quantised types get bars under those figures
#: that still catch a broken file (a wrong layout or vocabulary agrees on almost nothing).
AGREEMENT = {"f32": 0.9, "f16": 0.9, "bf16": 0.6, "q8_0": 0.5, "q6_k": 0.4, "q5_k_m": 0.4, "q4_k_m": 0.25,
             "q4_0": 0.2}  # fmt: skip

#: largest logit difference for the unquantised types, where logits must stay close and not just
#: the greedy tokens: measured on the demo run 0.046 (f32) and 0.079 (f16) over 254 answer tokens,
#: llama.cpp summing in another order; ~10x that catches a file whose numbers are off (a wrong
#: norm epsilon or RoPE base) while its short greedy answers still agree
MAX_LOGIT_DIFF = {"f32": 0.5, "f16": 1.0}

#: what llama.cpp said while quantising (kept beside the file for export.json)
QUANT_NOTE = "quantize.json"

#: Ollama passes a request's system message both as .System and among .Messages: the range
#: renders the other roles only, so the system block appears once (LLaMA-Factory's Modelfiles
#: do the same)
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{- end }}<|im_start|>assistant
"""


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def modelfile(gguf_file: str, chat_template: str | None, stop: str, default_system: str | None = None) -> str:
    """An Ollama Modelfile for ``gguf_file``: its ChatML TEMPLATE, the template's default system
    prompt (what training saw where a conversation had none) and the end-of-turn stop.

    Ollama templates are Go templates, not Jinja: ChatML (the template family of SmolLM2 and
    Qwen) is translated; any other template is left to Ollama's default with a comment.
    """
    lines = [f"FROM ./{gguf_file}"]
    if chat_template and "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        if default_system:
            lines.append(f'SYSTEM """{default_system}"""')
    else:
        lines.append("# the chat template is not ChatML; write its TEMPLATE by hand (Ollama uses Go templates)")
    lines += [f'PARAMETER stop "{stop}"', "PARAMETER temperature 0", ""]
    return "\n".join(lines)


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system message a ChatML template adds to a conversation that has none (SmolLM2's
    "You are a helpful AI assistant named SmolLM..."), or None."""
    try:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False)
    except Exception:  # noqa: BLE001  (a template that cannot render this: no default to copy)
        return None
    header = "<|im_start|>system\n"
    start = rendered.find(header)
    if start < 0 or start > rendered.find("<|im_start|>user"):
        return None
    return rendered[start + len(header) : rendered.find("<|im_end|>", start)]


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ExportError(f"the gguf export checks its file in llama-cpp-python, which cannot be imported ({exc}); "
                          f"install it with {INSTALL}") from exc  # fmt: skip
    # llama.cpp logs every load and quantisation step to stderr unless this logger says otherwise
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def llama_quantize(source: Path, target: Path, quant: str) -> str | None:
    """Quantise the GGUF file ``source`` to ``quant`` with llama.cpp's quantiser.

    Returns:
        llama.cpp's note on tensors kept in another type (rows too short for the K-quant blocks), if any.
    """
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_QUANTS[quant])
    params.nthread = os.cpu_count() or 1
    with _captured_stderr() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise ExportError(f"llama.cpp could not quantise {source.name} to {quant} (status {status}): {log[-1:]}")
    # llama.cpp keeps rows that do not fill a 256-weight K-quant block in another type and says so
    fallback = [line for line in log if "fallback quantization" in line]
    return fallback[-1].split(":", 1)[-1].strip() if fallback else None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Lines llama.cpp writes to the process's stderr (C code: ``sys.stderr`` cannot catch them)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


class LlamaCppRuntime(Runtime):
    """A GGUF file in llama-cpp-python, answering greedily with its KV cache."""

    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int) -> None:
        llama_cpp = _llama_cpp()
        # logits_all keeps every row's logits, which the parity check compares
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0)
        except ValueError as exc:  # llama-cpp-python's word for a file llama.cpp could not load
            raise ExportError(f"llama.cpp cannot load {path} ({exc}): the GGUF file is not one it reads") from exc
        self.stop_ids = {int(self.llm.token_eos())}

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Rendered with the chat template the file carries and tokenized by llama.cpp, as
        llama-cpp-python's chat completion does with a template it does not know by name."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if template is None:
            raise ExportError("the GGUF file carries no chat template (tokenizer.chat_template)")
        formatter = Jinja2ChatFormatter(template, eos_token=self._text(self.llm.token_eos()),
                                        bos_token=self._text(self.llm.token_bos()))  # fmt: skip
        # roles are system, user or assistant (checked when the data loads), typed str on Message
        chat = cast("list[ChatCompletionRequestMessage]", [{"role": m.role, "content": m.content} for m in messages])
        rendered = formatter(messages=chat)
        return self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def _text(self, token: int) -> str:
        """A special token's text ("" for none: llama.cpp's id -1)."""
        return "" if token < 0 else self.llm.detokenize([token], special=True).decode("utf-8", "replace")

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_id: int) -> Generation:
        start = time.perf_counter()
        self.llm.reset()
        self.llm.eval(prompt)
        tokens, rows = [], []
        for _ in range(max_new_tokens):
            row = np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)
            token = int(np.argmax(row))
            tokens.append(token)
            rows.append(row)
            if token == stop_id:
                break
            self.llm.eval([token])
        return Generation(tokens, rows, time.perf_counter() - start)


class Gguf(ExportFormat):
    name = "gguf"
    summary = "merged model as a GGUF file for llama.cpp / Ollama (f16, q8_0, q4_k_m ...) with a Modelfile"
    quant_choices = (*OUTTYPES, *LLAMA_QUANTS)
    default_quant = "q8_0"

    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        quant = quant or self.default_quant
        require_llama(source.base.model.config)  # before merging: a 7B merge only to be told no
        merged, tokenizer = source.merged(), source.tokenizer
        target = folder / gguf_name(quant)
        with tempfile.TemporaryDirectory(prefix=".tokenizer-", dir=folder) as scratch:
            tokenizer.save_pretrained(scratch)
            if quant in OUTTYPES:
                write_gguf(merged, tokenizer, Path(scratch), target, quant)
            else:
                f16 = Path(scratch) / gguf_name("f16")
                write_gguf(merged, tokenizer, Path(scratch), f16, "f16")
                fallback = llama_quantize(f16, target, quant)
                (folder / QUANT_NOTE).write_text(json.dumps({"quant": quant, "llama_cpp_fallback": fallback}))
        (folder / "Modelfile").write_text(
            # the system message training put before conversations without one: the recipe's, else the template's
            modelfile(target.name, tokenizer.chat_template, tokenizer.eos_token,
                      source.run.recipe.data.system_prompt or default_system_prompt(tokenizer))  # fmt: skip
        )

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        (path,) = folder.glob("*.gguf")
        n_ctx = max(len(p) for p in source.prompts) + source.max_new_tokens + 8
        return LlamaCppRuntime(path, n_ctx)

    def thresholds(self, quant: str | None) -> ParityThresholds:
        quant = quant or self.default_quant
        return ParityThresholds(min_agreement=AGREEMENT[quant], max_logit_diff=MAX_LOGIT_DIFF.get(quant))

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        name = gguf_name(quant or self.default_quant)
        # quoted for a shell: a run folder's path may hold spaces (export.json shows the final folder's)
        notes: dict[str, object] = {"load": f"llama-cli -m '{folder / name}' -cnv; ollama create NAME -f "
                                            f"'{folder / 'Modelfile'}'", "file": name}  # fmt: skip
        if (folder / QUANT_NOTE).is_file():
            notes["llama_cpp_fallback"] = json.loads((folder / QUANT_NOTE).read_text())["llama_cpp_fallback"]
        return notes


FORMATS.add(Gguf.name, Gguf())
