"""Gradient checkpointing: recomputed blocks learn exactly as stored ones, keep less for backward,
and "auto" turns them on only when the largest step would not fit in free memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from finjust.methods import get_method
from finjust.models.forward_swap import repeated_blocks, swapped_forwards
from finjust.objectives.sft import batch_loss_sum, make_batch
from finjust.recipe import TrainSection
from finjust.train import recompute
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model


def _lora(tiny_model_dir) -> nn.Module:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_method("lora").apply(base, get_method("lora").options_class(dropout=0.1))


def _train(model, tiny_tokens, tmp_path, setting, steps=4) -> tuple[list[float], list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    cfg = TrainSection(epochs=1, max_steps=steps, batch_size=4, warmup_ratio=0.0, scheduler="constant", lr=5e-3,
                       save_every=10**9, patience=None, seed=0, gradient_checkpointing=setting)  # fmt: skip
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / f"ck-{setting}",
        log=MetricsLog(tmp_path / f"metrics-{setting}.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: events.append((kind, payload)),
    )  # fmt: skip
    train_model(model, setup)
    return [p["loss"] for kind, p in events if kind == "step"], events


def test_recomputed_steps_learn_exactly_as_stored_ones(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch):
    stored_model, recomputed_model = _lora(tiny_model_dir), _lora(tiny_model_dir)
    runs = []  # the block calls made under a checkpoint
    real = recompute.recomputing
    monkeypatch.setattr("finjust.train.loop.recomputing",
                        lambda *args: lambda *a, **k: runs.append(1) or real(*args)(*a, **k))  # fmt: skip
    stored, _ = _train(stored_model, tiny_tokens, tmp_path, setting=False)
    assert runs == []
    recomputed, _ = _train(recomputed_model, tiny_tokens, tmp_path, setting=True)
    assert len(runs) == len(recomputed) * recomputed_model.config.num_hidden_layers
    assert recomputed == pytest.approx(stored, rel=1e-5)  # dropout draws the same masks again
    assert stored[-1] < stored[0]
    for (name, a), b in zip(stored_model.named_parameters(), recomputed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert all("forward" not in vars(block) for block in repeated_blocks(recomputed_model))


def test_recomputing_blocks_keep_a_fraction_of_the_activations(tiny_model_dir, tiny_tokens):
    model = _lora(tiny_model_dir)
    batch = make_batch(tiny_tokens[:4])

    def saved() -> int:
        return recompute.saved_activation_bytes(lambda: batch_loss_sum(model, batch), model.parameters())

    stored = saved()
    blocks = {block: recompute.recomputing(block.forward, model.config) for block in repeated_blocks(model)}
    with swapped_forwards(blocks, blocks.get):
        recomputed = saved()
    assert len(blocks) == model.config.num_hidden_layers
    assert recomputed < stored / 2


def test_saved_bytes_count_each_storage_once_and_leave_weights_out():
    x = torch.randn(100, requires_grad=True)
    weight = nn.Parameter(torch.randn(100))

    def forward() -> None:
        (x * weight).exp()  # saves x, the weight and exp's 100-float result
        x.view(10, 10).sin()  # saves a view of x: x's storage again

    assert recompute.saved_activation_bytes(forward, [weight]) == 2 * 100 * 4


def test_largest_batch_is_bounded_by_its_examples_times_its_longest():
    sizes = [5, 3, 10, 2]
    assert recompute.largest_batch_positions([[[0, 1], [2]], [[3]]], sizes) == 10
    assert recompute.largest_batch_positions([[[0, 1, 3]]], sizes) == 15
    assert recompute.largest_batch_positions([], sizes) == 0


@pytest.mark.parametrize(("activations", "free", "fits"), [(40, 100, True), (60, 100, False), (10**12, None, True)])
def test_an_estimate_fits_within_half_the_free_memory(activations, free, fits):
    assert recompute.MemoryEstimate(activations, free).fits is fits


def test_the_probe_leaves_the_random_stream_as_it_was():
    x = torch.randn(1000, requires_grad=True)
    before = torch.get_rng_state()
    estimate = recompute.memory_estimate(
        lambda: torch.nn.functional.dropout(x, 0.5).exp(), 1000, 4000, [], torch.device("cpu")
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert estimate.activation_bytes >= 4 * 1000 * 4  # exp's result at least, scaled 4x


@pytest.mark.parametrize(("free", "on"), [(10_000, True), (10**15, False)])
def test_auto_recomputes_only_when_memory_is_short(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch, free, on):
    monkeypatch.setattr(recompute, "free_memory_bytes", lambda device: free)
    model = _lora(tiny_model_dir)
    swapped = []
    real = recompute.recomputing
    monkeypatch.setattr("finjust.train.loop.recomputing", lambda *args: swapped.append(args) or real(*args))
    losses, events = _train(model, tiny_tokens, tmp_path, setting=None, steps=2)
    notes = [p["text"] for kind, p in events if kind == "phase" and "gradient checkpointing" in p["text"]]
    assert bool(swapped) is on and len(notes) == int(on)
    assert len(losses) == 2
    if on:
        assert "would take more than half of the 0.0 GB free" in notes[0]


def test_a_kv_cache_never_reaches_a_recomputed_block():
    seen = []

    def block(x, cache=None, use_cache=None):
        seen.append((cache, use_cache))
        return x.exp()

    config = type("Config", (), {"_attn_implementation": "sdpa"})()
    x = torch.randn(4, requires_grad=True)
    recompute.recomputing(block, config)(x, cache=["keys"], use_cache=True).sum().backward()
    assert seen == [(None, False), (None, False)]  # the forward and its recompute


def test_repeated_blocks_are_the_layers_not_the_embeddings():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=32))  # fmt: skip
    assert "BertEmbeddings" in bert._no_split_modules
    assert [type(b).__name__ for b in repeated_blocks(bert)] == ["BertLayer"] * 3

    class Block(nn.Linear):
        pass

    class Custom(nn.Sequential):  # remote code whose layers are plain modules
        _no_split_modules = ["Block"]

    custom = Custom(Block(2, 2), Block(2, 2), nn.Linear(2, 2))
    assert repeated_blocks(custom) == [custom[0], custom[1]]


def test_a_recipe_asking_to_recompute_prefix_tuning_is_refused():
    from finjust.errors import RecipeError
    from finjust.recipe import recipe_from_dict

    raw = {"model": {"name": "m/x"}, "data": {"train": "t.jsonl"}, "output": {"dir": "o"},
           "method": {"name": "prefix_tuning"}, "train": {"gradient_checkpointing": True}}  # fmt: skip
    with pytest.raises(RecipeError, match="train.gradient_checkpointing: prefix_tuning trains through a KV cache"):
        recipe_from_dict(raw)
    raw["train"]["gradient_checkpointing"] = None
    assert recipe_from_dict(raw).train.gradient_checkpointing is None


def test_auto_leaves_prefix_tuning_stored_when_memory_is_short(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(recompute, "free_memory_bytes", lambda device: 10_000)
    torch.manual_seed(0)
    method = get_method("prefix_tuning")
    model = method.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                         method.options_class(virtual_tokens=4))  # fmt: skip
    cfg = TrainSection(epochs=1, max_steps=2, batch_size=4, lr=1e-2, patience=None, seed=0)
    steps = []
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=1e-2, checkpoints=tmp_path / "ck",
        log=MetricsLog(tmp_path / "metrics.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: steps.append(payload) if kind == "step" else None,
        packing=method.supports_packing, recompute=method.supports_recompute,
    )  # fmt: skip
    train_model(model, setup)  # recomputing its blocks would fail on the prefix cache's shapes
    assert len(steps) == 2
