"""Load a causal language model and its tokenizer from a folder, a GGUF file or a short name.

GGUF files (and the models packages ship as GGUF) are dequantised once by transformers and
cached as a plain safetensors folder: dequantising takes ~15 s, reloading the cache <1 s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from finjust import atomic
from finjust.errors import ModelLoadError
from finjust.models.choices import DEVICES, DTYPES
from finjust.models.shipped import SHIPPED_ENCODERS, SHIPPED_MODELS

#: the dtypes of :data:`~finjust.models.choices.DTYPES` besides "auto"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class LoadedModel:
    """A model ready to use, with where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    folder: Path
    device: torch.device
    dtype: torch.dtype


def choose_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    if preference not in DEVICES:
        raise ModelLoadError(f"device {preference!r} is not one of {', '.join(DEVICES)}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def choose_dtype(preference: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware computes it fast, else fp32 (or what the recipe says)."""
    if preference != "auto":
        if preference not in _DTYPES:
            raise ModelLoadError(f"dtype {preference!r} is not one of {', '.join(DTYPES)}")
        return _DTYPES[preference]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in here: autocast's when it is on, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def align_layer_norm_dtypes(model: nn.Module) -> None:
    """Put a LayerNorm's weight and bias in one dtype where one of them was upcast to fp32 to
    train (BitFit's biases, fp32 masters): torch's CPU kernel takes a bf16 input with fp32
    weight and bias, but not one of each, and CPU autocast does not cast layer_norm's arguments."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.weight is not None and module.bias is not None:
            if module.weight.dtype != module.bias.dtype:
                module.weight.data, module.bias.data = module.weight.data.float(), module.bias.data.float()


#: temp folders of conversions in progress, beside the finished ones in the cache
CONVERTING_PREFIX = ".converting-"
#: a conversion's temp folder this old was abandoned (a conversion takes seconds to minutes)
ABANDONED_AFTER_SECONDS = 24 * 3600


def cache_root() -> Path:
    """Where converted models are cached: ``$FINJUST_CACHE`` (``~`` expanded, made absolute) or
    (unset or empty, which would otherwise mean the working folder) ``~/.cache/finjust``.

    Raises:
        ModelLoadError: neither is there: FINJUST_CACHE unset or empty and HOME set but empty,
            where Python's home lookup gives "/" (the cache would be /.cache/finjust).
    """
    configured = os.environ.get("FINJUST_CACHE")
    if configured:
        return Path(configured).expanduser().absolute()
    if os.environ.get("HOME") == "":  # Python's home lookup then gives "/": the cache would be /.cache
        raise ModelLoadError("no folder for finjust's cache: HOME is empty and FINJUST_CACHE is not set; set "
                             "FINJUST_CACHE to a folder with room (the shipped model converts to ~0.5 GB)")  # fmt: skip
    return Path.home() / ".cache" / "finjust"  # HOME, or where unset the user's entry in the password database


def resolve_model_folder(name: str) -> Path:
    """A transformers folder for ``name``: the folder itself, or a cached conversion of a GGUF."""
    source = locate_model(name)
    return _cached_gguf_folder(source) if source.is_file() else source


def locate_model(name: str) -> Path:
    """Where the model ``name`` lies (a Hugging Face folder or a .gguf file), converting nothing.

    Raises:
        ModelLoadError: no such shipped model, folder or file.
    """
    if name in SHIPPED_MODELS:
        return SHIPPED_MODELS.get(name).locate()
    if name in SHIPPED_ENCODERS:  # a plain folder already (a base for classification)
        return SHIPPED_ENCODERS.get(name).locate()
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json; expected a Hugging Face model folder")
        return path
    shipped = [*SHIPPED_MODELS.names(), *SHIPPED_ENCODERS.names()]
    raise ModelLoadError(
        f"model {name!r} is neither a shipped model ({', '.join(shipped)}), "
        "a Hugging Face model folder, nor a .gguf file"
    )


def _cached_gguf_folder(gguf: Path) -> Path:
    folder = cache_root() / "models" / f"{gguf.stem}-{_gguf_key(gguf)}"
    if not (folder / "config.json").is_file():
        _remove_abandoned_conversions(folder.parent)
        _convert_gguf(gguf, folder)
    return folder


def model_fingerprint(name: str) -> str:
    """What identifies the weights of model ``name`` wherever they lie, so a run can follow them to
    another path: a GGUF file's content hash (computed anyway to key its conversion); a folder's
    ``config.json`` with its weight files' names and sizes (hashing gigabytes at every start would
    take seconds; weights rewritten at the same size would pass)."""
    path = locate_model(name)
    if path.is_file():
        return "gguf:" + _gguf_key(path)
    digest = hashlib.blake2b((path / "config.json").read_bytes(), digest_size=16)
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return "folder:" + digest.hexdigest()


def _gguf_key(gguf: Path) -> str:
    """The GGUF file's content hash, hashed once a process while its size and mtime stay."""
    stat = gguf.stat()
    return _content_key(gguf.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _content_key(gguf: Path, size: int, mtime_ns: int) -> str:
    """The file's content hash (size and mtime only key the in-process memo).

    Keyed by content, not by path: the same package installed in another virtual environment
    reuses its conversion. A path key added a 0.5 GB copy of SmolLM2 for every fresh install.
    Hashing reads the file once a process (~0.12 s for the shipped 98 MB).
    """
    with gguf.open("rb") as file:
        return hashlib.file_digest(file, "blake2b").hexdigest()[:16]


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise ``gguf`` into a safetensors folder, written atomically (temp folder + rename)."""
    tmp = _conversion_folder(folder.parent, gguf)  # before the slow part: an unwritable cache fails at once
    try:
        # "Writing model shards" and "de-quantizing" bars ran into logs as \r-joined lines
        with without_progress_bars(), _gguf_reader_bar_off():
            _convert_into(gguf, tmp)
        atomic.readable_and_synced(tmp)  # as the umask allows: a cache shared by accounts serves them all
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
        # another process finished converting the same file first: its copy serves
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _conversion_folder(models: Path, gguf: Path) -> Path:
    """A temp folder in the cache to convert into.

    Raises:
        ModelLoadError: the cache cannot be written, named with the setting that moves it.
    """
    try:
        models.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=CONVERTING_PREFIX, dir=models))
    except OSError as error:
        raise ModelLoadError(f"cannot write the model cache {models} ({error.strerror or error}), where "
                             f"{gguf.name} is converted once (~4x its size); set FINJUST_CACHE to a folder "
                             "you can write") from error  # fmt: skip


def _convert_into(gguf: Path, tmp: Path) -> None:
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unreadable files
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {exc}") from exc
    # A model loaded from GGUF refuses save_pretrained while it carries the GGUF
    # quantization_config; rebuilding it from a clean config is the documented way out.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    _set_stop_token(plain, tokenizer)
    _save_converted(plain, tokenizer, tmp, gguf)


def _save_converted(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tmp: Path, gguf: Path) -> None:
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except Exception as exc:  # safetensors reports a full disk as a bare SafetensorError ("I/O error")
        free = shutil.disk_usage(tmp).free / 1e9
        raise ModelLoadError(f"cannot write the converted {gguf.name} into the model cache {tmp.parent} "
                             f"({type(exc).__name__}: {exc}; {free:.1f} GB free there, and it needs ~4x the "
                             "file's size); free some space, or set FINJUST_CACHE to another folder") from exc


def _remove_abandoned_conversions(models: Path) -> None:
    """Delete temp folders of conversions killed midway (~0.5 GB each for SmolLM2). Only old
    ones: a younger one may be another process's conversion in progress."""
    cutoff = time.time() - ABANDONED_AFTER_SECONDS
    for tmp in models.glob(f"{CONVERTING_PREFIX}*") if models.is_dir() else ():
        with contextlib.suppress(OSError):  # another process removed it first
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp)


def stop_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids generation stops at: the tokenizer's EOS (the chat template's end of turn
    for most chat models) first, then every other the model's generation config lists. Gemma's
    instruction models end a turn with ``<end_of_turn>`` while their tokenizer's EOS is ``<eos>``:
    stopping at the tokenizer's alone ran answers past the turn's end."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = configured if isinstance(configured, list) else [configured]
    ids = [tokenizer.eos_token_id, *listed]
    return list(dict.fromkeys(int(i) for i in ids if isinstance(i, int)))


def _set_stop_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Generation stops at the tokenizer's end-of-turn token (the chat template's EOS) and at
    the others the model's generation config names."""
    if tokenizer.eos_token_id is not None:
        stops = stop_token_ids(model, tokenizer)
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
        model.config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None:
        pad = tokenizer.pad_token_id  # 0 is a token id like any other
        model.generation_config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id


def load_tokenizer(folder: Path, chat: bool = True) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, with a pad token (the EOS token when it has none).

    ``chat`` requires a chat template (SFT renders conversations with it; classification does not).

    Raises:
        ModelLoadError: the folder's tokenizer files are missing or broken, or it has no chat template.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # transformers raises many types for missing or broken tokenizer files
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat and not tokenizer.chat_template:
        raise ModelLoadError(f"the tokenizer in {folder} has no chat template; finjust needs one for SFT")
    return tokenizer


@contextlib.contextmanager
def without_progress_bars() -> Iterator[None]:
    """transformers' own progress bars (its "Loading weights" bar on stderr at every load) off
    while inside: the library does not print, and the command line reports its own phases."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gguf_reader_bar_off() -> Iterator[None]:
    """transformers' GGUF reader draws its "Converting and de-quantizing GGUF tensors" bar with
    tqdm directly, past the switch :func:`without_progress_bars` turns: off while inside."""
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    bar = gguf_reader.tqdm
    gguf_reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_reader.tqdm = bar


def load_model(
    name: str, dtype: str = "auto", device: str = "auto", extra_kwargs: Mapping[str, Any] | None = None
) -> LoadedModel:
    """Load model and tokenizer by short name, folder or GGUF file, on the chosen device and dtype.

    Args:
        name: a shipped model's short name, a Hugging Face folder or a ``.gguf`` file.
        dtype: ``auto``, ``bfloat16`` or ``float32``.
        device: ``auto``, ``cpu`` or ``cuda``.
        extra_kwargs: more ``from_pretrained`` arguments, e.g. a method's 4-bit
            ``quantization_config`` (see ``Method.model_load_kwargs``).

    Returns:
        The model (in eval mode, on ``device``), its tokenizer, folder, device and weight dtype.

    Raises:
        ModelLoadError: no model of that name or at that path, a dtype or device not listed
            above (or CUDA asked for where there is none), or a folder transformers cannot load.
    """
    folder = resolve_model_folder(name)
    target = choose_device(device)
    torch_dtype = choose_dtype(dtype, target)
    tokenizer = load_tokenizer(folder)
    try:
        with without_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **(extra_kwargs or {}))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model in {folder}: {exc}") from exc
    _set_stop_token(model, tokenizer)
    # transformers wraps PreTrainedModel.to with functools.wraps(nn.Module.to), which mypy reads as unbound
    return LoadedModel(model.to(target), tokenizer, folder, target, torch_dtype)  # type: ignore[arg-type]
