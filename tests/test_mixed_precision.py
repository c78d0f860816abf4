"""Training a bf16 base under autocast: adapters keep fp32 masters and peft's casts stay off."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.methods import get_method
from finjust.recipe import TrainSection
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model


def _adapter_casts(model) -> set[bool]:
    return {m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")}


def _setup(tiny_tokens, tmp_path, on_step, packing: bool) -> LoopSetup:
    cfg = TrainSection(epochs=1, max_steps=12, batch_size=4, warmup_ratio=0.0, scheduler="constant",
                       save_every=10**9, patience=None, seed=0, compile=False)  # fmt: skip
    return LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / "checkpoints",
        log=MetricsLog(tmp_path / "metrics.jsonl"), device=torch.device("cpu"), autocast_dtype=torch.bfloat16,
        on_event=lambda kind, payload: on_step(payload) if kind == "step" else None, packing=packing,
    )  # fmt: skip


#: every method that trains beside a frozen bf16 base (full and freeze train base weights, so
#: their base loads in fp32; qlora loads it in 4 bits)
OVER_A_BF16_BASE = ["lora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "bitfit"]


@pytest.mark.parametrize("name", OVER_A_BF16_BASE)
def test_training_over_a_bf16_base_keeps_fp32_masters_and_leaves_the_base(name, tiny_model_dir, tiny_tokens,
                                                                          tmp_path):  # fmt: skip
    method = get_method(name)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = method.apply(base, method.options_class())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses: list[float] = []
    casts_during: set[bool] = set()

    def on_step(record: dict) -> None:
        losses.append(record["loss"])
        casts_during.update(_adapter_casts(model))

    train_model(model, _setup(tiny_tokens, tmp_path, on_step, packing=method.supports_packing))
    # autocast does the casting: peft's extra copies are off (LoRA-style layers have the switch)
    assert casts_during == ({False} if name in ("lora", "dora") else casts_during - {True})
    assert sum(losses[-3:]) < sum(losses[:3])
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.dtype == torch.float32, name
            assert not torch.equal(param, before[name]), f"{name} did not train"
        else:
            assert param.dtype == torch.bfloat16 and torch.equal(param, before[name]), f"{name} changed"
    # the casts are off only while the loop runs: plain bf16 forwards outside it still work
    assert _adapter_casts(model) <= {True}
