"""Training forwards for RMSNorm and SwiGLU MLPs that keep fewer and smaller tensors for backward.

The decoder's saved activations are most of a LoRA step's memory. Two of transformers' blocks
keep more than their backward needs:

- RMSNorm computes in fp32 and autograd keeps that fp32 copy of its input (twice per layer);
  here the bf16 input and the per-row inverse norm are kept, and the fp32 copy is made again
  in backward;
- the SwiGLU MLP ``down(silu(gate(x)) * up(x))`` keeps gate's output for silu's backward and
  both factors for the product's; here gate's and up's outputs are kept and silu is
  recomputed in backward.

Forward values are exactly transformers' (the same operations in the same order); gradients
equal theirs to rounding (``tests/test_lean_activations.py``). Measured on the training
benchmark (SmolLM2-135M, 8 demo answers a step, bf16): together 0.10 GB lower peak RSS at
the same speed (1.82 -> 1.72 GB in the build that measured it, whose loss chunks were twice as long).

Compiled blocks trace the same arithmetic as plain differentiable ops instead: inductor fuses
it and the partitioner chooses what backward keeps, and an ``autograd.Function`` in the graph
kept AOTAutograd's cache from holding the compiled block (measured with the attention's
:func:`~finjust.models.segment_attention._traced_causal_attention`: the first step 9.3-10.1 s
with the caches warm, 5.0-5.6 s without the Functions; steps and peak the same, each step's
best 14.38 against 14.12 s over 12 steps, 1.35 GB; Zen 4). Traced through the
classes' own forwards instead, the same steps peaked ~0.07 GB higher (1.42 GB).

Why ours: transformers swaps these blocks only for kernels from its hub (``kernels``
package, downloaded at run time); Liger-Kernel's equivalents need Triton.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import SiLUActivation

from finjust.models.forward_swap import swapped_forwards


class _RMSNorm(torch.autograd.Function):
    """``weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)``, keeping x rather than x.float()."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        inv_norm = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, inv_norm)
        return weight * (x32 * inv_norm).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, inv_norm = ctx.saved_tensors
        normed = x.float() * inv_norm
        # the rounding of transformers' graph: the product's gradient is cast to x's dtype first
        grad_normed = (grad * weight).to(x.dtype).float()
        grad_x = inv_norm * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normed.to(x.dtype)).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
        return grad_x.to(x.dtype), grad_weight, None


class _SiluProduct(torch.autograd.Function):
    """``silu(gate) * up``, keeping gate and up only."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate)


class _RMSNormBlock(Protocol):
    """What the lean forward reads of a transformers RMSNorm."""

    weight: torch.Tensor
    variance_epsilon: float


def _lean_rms_norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    norm = cast(_RMSNormBlock, module)  # torch types a module's attributes as Tensor | Module

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # plain ops: see the module docstring
            return _rms_norm(hidden_states, norm.weight, norm.variance_epsilon)
        return _RMSNorm.apply(hidden_states, norm.weight, norm.variance_epsilon)

    return forward


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`_RMSNorm`'s forward as plain differentiable ops."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class _SwiGLUBlock(Protocol):
    """What the lean forward reads of a transformers SwiGLU MLP."""

    act_fn: nn.Module
    gate_proj: nn.Module
    up_proj: nn.Module
    down_proj: nn.Module


def _lean_swiglu(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    mlp = cast(_SwiGLUBlock, module)  # torch types a module's attributes as Tensor | Module
    if not isinstance(mlp.act_fn, (SiLUActivation, nn.SiLU)):
        return None  # another activation: the class's own forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        product = F.silu(gate) * up if torch.compiler.is_compiling() else _SiluProduct.apply(gate, up)
        return mlp.down_proj(product)

    return forward


#: classes whose forward is exactly what the lean version computes (checked against
#: transformers 5.24's source): class name -> the lean forward for one module, or None
LEAN_FORWARDS: dict[str, Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor] | None]] = {
    **dict.fromkeys(("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Phi3RMSNorm"), _lean_rms_norm),
    **dict.fromkeys(("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"), _lean_swiglu),
}


def _lean_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    make = LEAN_FORWARDS.get(type(module).__name__)
    return make(module) if make else None


def lean_activations(model: nn.Module) -> AbstractContextManager[int]:
    """Run the lean forwards of ``model``'s known blocks while inside; yields how many were swapped."""
    return swapped_forwards(model.modules(), _lean_forward)
