"""Write a transformers Llama-family model as a GGUF file: the Llama path of llama.cpp's converter.

What and why: llama.cpp maintains ``convert_hf_to_gguf.py``, but it is not on PyPI (only its
``gguf`` package is; llama-cpp-python vendors the script in its sdist, not in the installed
package, and the script imports a ``conversion/`` package of ~100 architectures). So this
module ports the few steps its ``LlamaModel`` takes, on top of the ``gguf`` package
(writer, tensor-name map, special-vocabulary reader and Q8_0 quantiser) from PyPI:

1. hyperparameters under ``llama.*`` (block count, widths, heads, RoPE base and dimension,
   RMS-norm epsilon, vocabulary size);
2. the BPE vocabulary as ``tokenizer.ggml.*`` (tokens, types, merges, special ids and the
   chat template), with the pre-tokenizer named the way the converter's hash table names it;
3. tensors renamed by ``gguf.get_tensor_name_map``, with the query and key projections
   permuted from transformers' rotate-half RoPE layout to llama.cpp's interleaved one
   (``LlamaModel.permute``), 1-D tensors in f32 and matrices in the chosen type (Q8_0 falls
   back to f16 for rows not a multiple of its 32-weight block, as the converter does).

Other quantisations (Q4_K_M ...) are made from the f16 file by llama.cpp's own quantiser
(see :mod:`finjust.export.gguf_format`). Only Llama-architecture models are supported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np
import torch

from finjust.errors import ExportError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: the types this module writes itself, with the GGUF file type each declares
OUTTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

# llama.cpp's convert_hf_to_gguf.py names the pre-tokenizer by hashing the tokens of this
# text (``get_vocab_base_pre``); the hashes of the tokenizers finjust ships are kept here.
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
}


def require_llama(config: object) -> None:
    """The port writes Llama-architecture models only.

    Raises:
        ExportError: ``config`` is another architecture's, naming what to do instead.
    """
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        raise ExportError(f"the gguf export supports Llama-architecture models; this one is {model_type!r}: "
                          "export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py")  # fmt: skip


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokenizer_dir: Path, path: Path,
               outtype: str) -> None:  # fmt: skip
    """Write ``model`` with ``tokenizer`` (saved in ``tokenizer_dir``) to ``path`` as GGUF ``outtype``.

    Raises:
        ExportError: not a Llama-architecture model, or a tokenizer the port cannot name.
    """
    config = model.config
    require_llama(config)
    qtype, file_type = OUTTYPES[outtype]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _write_parameters(writer, config, file_type)
        _write_vocab(writer, tokenizer, tokenizer_dir, config.vocab_size)
        for name, array, tensor_type in _tensors(model, qtype):
            writer.add_tensor(name, array, raw_dtype=tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _write_parameters(writer: gguf.GGUFWriter, config: object, file_type: gguf.LlamaFileType) -> None:
    get: Callable[[str], Any] = config.__dict__.get  # the config's values are untyped
    heads = get("num_attention_heads")
    writer.add_name(str(get("_name_or_path") or "finjust export"))
    writer.add_block_count(get("num_hidden_layers"))
    writer.add_context_length(get("max_position_embeddings"))
    writer.add_embedding_length(get("hidden_size"))
    writer.add_feed_forward_length(get("intermediate_size"))
    writer.add_head_count(heads)
    writer.add_head_count_kv(get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(get("rms_norm_eps"))
    writer.add_rope_freq_base(_rope_theta(config))
    head_dim = get("head_dim") or get("hidden_size") // heads
    writer.add_rope_dimension_count(head_dim)
    # llama.cpp takes hidden / heads where these are missing: wrong for a head_dim set apart
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(get("vocab_size"))
    writer.add_file_type(file_type)


def _rope_theta(config: object) -> float:
    """RoPE base; transformers 5 keeps it in ``rope_parameters``. Scaled RoPE is not ported."""
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ExportError(f"the gguf export does not port RoPE scaling {rope_type!r}; use llama.cpp's converter")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _write_vocab(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, tokenizer_dir: Path,
                 vocab_size: int) -> None:  # fmt: skip
    vocab = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if decoder[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, tokenizer_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # merges, bos/eos/pad ids and the chat template, read from the saved tokenizer files
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    # transformers 5 no longer saves add_bos_token in tokenizer_config.json, so SpecialVocab finds no
    # flag; unset, some runtimes (Ollama's) default to adding a BOS the model never trained with
    for kind in ("bos", "eos"):
        special.add_special_token.setdefault(kind, bool(getattr(tokenizer, f"add_{kind}_token", False)))
    special.add_to_gguf(writer)


def _pre_tokenizer(tokenizer: PreTrainedTokenizerBase, tokenizer_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer: a known hash, or plain GPT-2 byte-level BPE."""
    digest = hashlib.sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    if digest in _KNOWN_PRE:
        return _KNOWN_PRE[digest]
    pre = json.loads((tokenizer_dir / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # GPT-2's own regex, which llama.cpp implements as "gpt-2"
    if getattr(tokenizer, "is_fast", False) and pre.get("type") == "Sequence":  # v5's class names lack "Fast"
        raise ExportError("the gguf export cannot name this tokenizer's pre-tokenizer for llama.cpp (hash "
                          f"{digest[:12]}...); convert the merged export with llama.cpp's convert_hf_to_gguf.py")  # fmt: skip
    raise ExportError("the gguf export supports byte-level BPE tokenizers (GPT-2 style) only")


def _permute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' rotate-half RoPE layout -> llama.cpp's interleaved pairs (``LlamaModel.permute``)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)  # fmt: skip


def _tensors(model: PreTrainedModel, qtype: gguf.GGMLQuantizationType):  # noqa: ANN202 (a generator of triples)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp uses token_embd for the output when output.weight is absent
        if "rotary_emb" in name:
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"the gguf export cannot map tensor {name!r} to a llama.cpp name")
        data = tensor.detach().to(torch.float32)
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        yield (target, *_encode(data.numpy(), qtype))


def _encode(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """1-D tensors stay f32; matrices take ``qtype``, or f16 where rows do not fill its blocks."""
    if array.ndim <= 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if array.shape[-1] % block:
        qtype = gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), qtype
    return gguf.quants.quantize(array, qtype), qtype
