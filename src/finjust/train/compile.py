"""Regional torch.compile for training steps: one compiled decoder block, reused by every layer.

Compiling the whole decoder took 92-175 s on our CPU and recompiled for validation's
no-grad forward, which ate the gain inside the demo (benchmarks/RESULTS.md). Compiling
only the repeated block (``LlamaDecoderLayer``) with dynamic shapes compiles one graph that
the layers share (all but a first whose input needs no gradient, which runs eager): 51 s for
the first step with empty caches, ~11 s once inductor's on-disk caches hold it, then 650-680
tokens/s against 472 eager on the demo's steps, in the build that measured it (it fuses
RMSNorm, rotary and the adapters' elementwise work). Only the training forward runs
compiled: validation, the forgetting probe and generation stay eager, so they compile
nothing.

accelerate's ``compile_regions`` does the same compiling but returns a copied module tree
with every leaf compiled too (the head among them), which the loss path would then miss;
here the blocks' own ``forward`` is swapped for the compiled one only around each step
(``train/loop.py``).
"""

from __future__ import annotations

import functools
import os
import shutil
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._dynamo import config as dynamo_config
from torch._dynamo.exc import BackendCompilerFailed
from torch._functorch import config as functorch_config

from finjust.errors import CompileError
from finjust.models.forward_swap import repeated_blocks

#: with "auto", compile runs of at least this many optimizer steps, by device type. CPU: the
#: training benchmark's steps (demo data, in tcmalloc) took 0.82 s eager and 0.73-0.76 s compiled
#: on an AMX machine, 1.41 s and 1.25 s on a Zen 4 one, where compiling costs 4.5-6.4 s with
#: inductor's caches warm and 36-39 s cold: a cold cache pays off after a few hundred steps
#: (timings: benchmarks/RESULTS.md); the 105-step demo stays eager.
#: CUDA: on an H100 the same benchmark's steps (a model of SmolLM2-135M's shapes) took 0.27 s
#: eager and 0.17-0.19 s compiled after a 128-135 s first step with cold caches (two rounds):
#: from ~1,300-1,700 steps.
AUTO_MIN_STEPS = {"cpu": 200, "cuda": 1500}
#: the share of the saved activations AOTAutograd's partitioner may keep for backward (1.0, its
#: default, keeps what is cheapest to run; below it recomputes cheap elementwise work instead of
#: saving it): on the training benchmark 0.5 lowered the compiled steps' peak RSS from 1.59-1.60
#: to 1.33-1.35 GB at the same speed (4 alternating pairs, 458/441/385/436 vs 458/450/364/439
#: tokens/s; Zen 4); 0.3 and 0.1 went to 1.31 GB with no clearer speed
ACTIVATION_MEMORY_BUDGET = 0.5


def should_compile(setting: bool | None, device: torch.device, total_steps: int) -> bool:
    """``train.compile``: true/false as set; null ("auto"): long runs where inductor can build
    (its CUDA kernels too need a compiler and the Python headers: Triton builds its launcher with them)."""
    if setting is not None:
        return setting
    return _long_enough(device, total_steps) and has_cpp_compiler()


def _long_enough(device: torch.device, total_steps: int) -> bool:
    """A run "auto" compiles on this device type, where it can build (:data:`AUTO_MIN_STEPS`)."""
    threshold = AUTO_MIN_STEPS.get(device.type)
    return threshold is not None and total_steps >= threshold


def has_cpp_compiler() -> bool:
    """Inductor's CPU backend builds C++ that includes Python.h: without a compiler, or without
    the Python headers (a system Python lacking python3-dev), compiling fails at the first step."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(os.environ.get("CXX", "g++")) is not None and headers.is_file()


@contextmanager
def explained_build_failures(compiling: bool, setting: bool | None) -> Iterator[None]:
    """Turn inductor failing to build its kernels (a traceback of 100+ lines) into one CompileError."""
    try:
        yield
    except BackendCompilerFailed as exc:  # InductorError among them
        if not compiling:
            raise
        asked = "train.compile: true" if setting else "train.compile \"auto\" (which compiles long runs)"
        compiler = os.environ.get("CXX")
        fix = (f"fix or unset CXX (it names {compiler!r})" if compiler
               else "install a C++ compiler and the Python headers (Debian: g++ python3-dev)")  # fmt: skip
        raise CompileError(f"{asked}: torch.compile could not build its kernels here ({_cause(exc)}); set "
                           "train.compile: false to train eagerly (a run with checkpoints: in its recipe.yaml, "
                           f"then --resume), or {fix}") from exc  # fmt: skip


def eager_for_want_of_a_compiler(setting: bool | None, device: torch.device, total_steps: int) -> bool:
    """True where "auto" would compile this run but no compiler or Python headers are found."""
    return setting is None and _long_enough(device, total_steps) and not has_cpp_compiler()


def compiled_forwards(model: nn.Module) -> dict[nn.Module, Callable[..., Any]]:
    """A compiled forward for each of the model's repeated blocks (all one graph: dynamic shapes),
    for the loop to swap in around each training step."""
    return {block: _compiled_forward(block) for block in repeated_blocks(model)}


def _compiled_forward(block: nn.Module) -> Callable[..., Any]:
    """``block.forward`` compiled, but eager where the block trains and its input needs no gradient.

    That is the first block under LoRA and the other adapters, whose input is the frozen
    embeddings' output: dynamo guards on the input's ``requires_grad``, and compiled that one
    block's graph a second time (~5-6 s of a 24 s first step) for ~5 ms a step. Blocks that
    train nothing (below ``method: freeze``'s layers) share one graph of their own.

    Compiling reads two settings when a call compiles, so every call carries them: AOTAutograd's
    :data:`ACTIVATION_MEMORY_BUDGET`, and dynamo's ``specialize_float``: traced as symbols, the
    blocks' float constants (LoRA's scaling, the norms' epsilon) made dynamo restart its first
    trace (~5 s), as inductor turns symbolic floats into tensors and asks for a retrace.
    """
    forward = block.forward
    compiled = torch.compile(forward, dynamic=True)
    trains = any(parameter.requires_grad for parameter in block.parameters())

    @functools.wraps(forward)
    def call(*args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if trains and isinstance(hidden, torch.Tensor) and not hidden.requires_grad:
            return forward(*args, **kwargs)
        with functorch_config.patch(activation_memory_budget=ACTIVATION_MEMORY_BUDGET), \
                dynamo_config.patch(specialize_float=True):
            return compiled(*args, **kwargs)

    return call


def _cause(failure: BackendCompilerFailed) -> str:
    """The failure's first line, and the compiler's first error line where it is a C++ build."""
    head = next((line.strip() for line in str(failure).splitlines() if line.strip()), type(failure).__name__)
    output = str(getattr(getattr(failure, "inner_exception", None), "output", ""))
    detail = next((line.strip() for line in output.splitlines() if "error" in line.lower()), "")
    return (f"{head}: {detail}" if detail else head)[:300]
