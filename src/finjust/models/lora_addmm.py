"""An eager training forward for peft's LoRA linear layers: base and adapter in one autograd node.

peft computes ``base(x) + lora_B(lora_A(x)) * scaling``: B's output, its scaled copy and the
sum are three activation-sized tensors, and backward scales the full-width gradient again and
adds the adapter's input gradient to the base's. Here B's matmul accumulates straight into the
base layer's output with ``addmm_`` (``alpha=scaling``), backward accumulates the adapter's
input gradient into the base's the same way, the scaling stays on the rank-r side in both
directions, and the frozen base's matmuls run in row chunks where oneDNN runs them faster
(:mod:`finjust.models.row_chunked_mm`). Measured on the training benchmark's eager steps
(SmolLM2-135M, r=16 on all linear layers, bf16): the addmm forward 498 -> 518 tokens/s and
0.12 GB lower peak RSS against peft's; the single node and the row chunks then +1.4% and
+2.5% more (three alternations, 544 -> 551 -> 565 tokens/s). Compiled steps keep peft's
forward: inductor fuses its scale-and-add already, and with the addmm forward they ran 2-13%
slower.

Used where the layer is plain LoRA: one active adapter, no dropout, no DoRA or other variant,
no LoRA bias, an ``nn.Linear`` base whose weights do not train; anything else at call time
(adapters switched off or merged, peft keyword arguments, a base in another dtype than the
computation's) runs peft's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn

from finjust.models.forward_swap import swapped_forwards
from finjust.models.load import matmul_dtype
from finjust.models.row_chunked_mm import chunked_mm


def lora_addmm_forwards(model: nn.Module) -> AbstractContextManager[int]:
    """Run the addmm forward on ``model``'s plain LoRA linear layers while inside; yields how many."""
    return swapped_forwards(model.modules(), _addmm_forward)


def _addmm_forward(module: nn.Module) -> Callable[..., torch.Tensor] | None:
    if type(module) is not LoraLinear or len(module.active_adapters) != 1:
        return None
    name = module.active_adapters[0]
    plain = (
        name in module.lora_A
        and name not in module.lora_variant
        and isinstance(module.lora_dropout[name], nn.Identity)
        and module.lora_B[name].bias is None
        and type(module.base_layer) is nn.Linear
    )
    if not plain:
        return None
    a, b, base = module.lora_A[name].weight, module.lora_B[name].weight, module.base_layer

    def one_node(x: torch.Tensor, dtype: torch.dtype, autocast: bool) -> bool:
        """Adapter on and unmerged, the base frozen and in the computation's dtype."""
        frozen = not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
        adapter_on = not module.disable_adapters and not module.merged
        return adapter_on and frozen and base.weight.dtype == dtype and (autocast or x.dtype == a.dtype)

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = matmul_dtype(x)
        if args or kwargs or not one_node(x, dtype, autocast):
            return LoraLinear.forward(module, x, *args, **kwargs)
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        # the scaling read at each call: peft's set_scale / scale_layer change it in place
        out = _FrozenBaseLora.apply(flat, base.weight, base.bias, a, b, module.scaling[name])
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


class _FrozenBaseLora(torch.autograd.Function):
    """``x W^T + bias + scaling * (x A^T) B^T`` with W and bias frozen, in x's dtype.

    One autograd node instead of peft's five (base matmul, A, B, scale, add): backward
    accumulates the adapter's input gradient into the base's with ``addmm_`` instead of adding
    two activation-sized tensors, and the base's matmuls run in row chunks where that is
    faster (:mod:`finjust.models.row_chunked_mm`). A and B (fp32 master weights under
    autocast) are cast to x's dtype, as autocast would, and get their gradients back in fp32.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor,
                b: torch.Tensor, scaling: float) -> torch.Tensor:  # fmt: skip
        with torch.autocast(x.device.type, enabled=False):
            xa = x @ a.to(x.dtype).T
            out = chunked_mm(x, weight.T, bias)
            # in place: nothing keeps the base's output for backward
            out.addmm_(xa, b.to(x.dtype).T, alpha=scaling)
        ctx.save_for_backward(x, xa, weight, a, b)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, xa, weight, a, b = ctx.saved_tensors
        grad = grad.contiguous()
        grad_xa = (grad @ b.to(grad.dtype)) * ctx.scaling  # the scaling on the rank-r side
        grad_b = (grad.T @ xa) * ctx.scaling
        grad_a = grad_xa.T @ x
        grad_x = None
        # not wanted where x needs none: the first layer's q, k and v read the frozen
        # embeddings (0.3% of SmolLM2's base matmul work a step)
        if ctx.needs_input_grad[0]:
            grad_x = chunked_mm(grad, weight)
            grad_x.addmm_(grad_xa, a.to(grad.dtype))
        return grad_x, None, None, grad_a.to(a.dtype), grad_b.to(b.dtype), None
