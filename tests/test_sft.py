"""Packed batches: the same loss as one example at a time, and no attention across examples."""

from __future__ import annotations

import pytest
import torch
from conftest import loss_and_grads
from transformers import AutoModelForCausalLM

from finjust.data.templates import IGNORE_INDEX, TokenizedExample
from finjust.models.shapes import ROW_MULTIPLE
from finjust.objectives.sft import (
    ROW_TOKENS,
    batch_loss_sum,
    eval_batches,
    pack,
    packed_hidden_states,
    training_batches,
)


@pytest.fixture()
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_packed_loss_equals_one_example_at_a_time(model, tiny_tokens):
    examples = tiny_tokens[:5]
    with torch.no_grad():
        packed_sum, packed_count = batch_loss_sum(model, pack(examples))
        single = [batch_loss_sum(model, pack([e])) for e in examples]
        # the HF reference: labels shifted inside the model, one unpadded example at a time
        reference = [model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])) for e in examples]
    assert packed_count == sum(count for _, count in single)
    torch.testing.assert_close(packed_sum, sum(loss for loss, _ in single), rtol=1e-5, atol=1e-4)
    counts = [e.trained_tokens for e in examples]
    ref_mean = sum(float(r.loss) * c for r, c in zip(reference, counts)) / sum(counts)
    assert float(packed_sum) / packed_count == pytest.approx(ref_mean, rel=1e-5)


def _logits(model, batch):
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits


# transformers' block mask over the row (the loss path of other model families), and the
# per-example attention of the families in PLAIN_HEAD_MODELS
@pytest.mark.parametrize("forward", [_logits, packed_hidden_states])
def test_no_token_attends_across_an_example_boundary(model, tiny_tokens, forward):
    first, second = tiny_tokens[0], tiny_tokens[1]
    scrambled = TokenizedExample([5] * len(first.input_ids), [IGNORE_INDEX] * len(first.input_ids))
    with torch.no_grad():
        logits_a = forward(model, pack([first, second]))
        logits_b = forward(model, pack([scrambled, second]))
    start = len(first.input_ids)
    torch.testing.assert_close(logits_a[:, start:], logits_b[:, start:])
    assert not torch.allclose(logits_a[:, :start], logits_b[:, :start])


def test_targets_never_cross_an_example_boundary(tiny_tokens):
    batch = pack(tiny_tokens[:3])
    ends = torch.cumsum(torch.tensor([len(e.input_ids) for e in tiny_tokens[:3]]), 0) - 1
    assert all(int(batch.targets[0, end]) == IGNORE_INDEX for end in ends)
    assert batch.trained_tokens == sum(e.trained_tokens for e in tiny_tokens[:3])


def test_eval_batches_keep_every_example(tiny_tokens):
    batches = eval_batches(tiny_tokens, tokens_per_batch=200)
    assert len(batches) > 1
    assert all(b.input_ids.shape[0] == 1 and b.filler_tokens == 0 for b in batches)  # one row, unpadded
    assert sum(b.trained_tokens for b in batches) == sum(e.trained_tokens for e in tiny_tokens)


def test_padded_batches_give_the_packed_loss(model, tiny_tokens):
    from finjust.objectives.sft import pad

    examples = tiny_tokens[:5]
    with torch.no_grad():
        packed_sum, packed_count = batch_loss_sum(model, pack(examples))
        padded_sum, padded_count = batch_loss_sum(model, pad(examples))
    assert padded_count == packed_count
    torch.testing.assert_close(padded_sum, packed_sum, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("packing", [True, False])
def test_example_losses_split_the_batch_loss_per_example(model, tiny_tokens, packing):
    from finjust.objectives.sft import example_losses, make_batch

    examples = tiny_tokens[:4]
    items = example_losses(model, eval_batches(examples, packing, tokens_per_batch=150), torch.device("cpu"), None)
    assert [count for _, count in items] == [e.trained_tokens for e in examples]
    with torch.no_grad():
        for (loss, _), example in zip(items, examples):
            single, _ = batch_loss_sum(model, make_batch([example], packing))
            assert loss == pytest.approx(float(single), rel=1e-5)


def test_rows_of_bounded_length_give_the_same_loss(model, tiny_tokens):
    examples = tiny_tokens[:7]
    one_row, rows = pack(examples), pack(examples, row_tokens=60, multiple=ROW_MULTIPLE)
    assert rows.input_ids.shape[0] > 1 and one_row.input_ids.shape[0] == 1
    assert rows.real_tokens == one_row.real_tokens == sum(len(e.input_ids) for e in examples)
    with torch.no_grad():
        expected, expected_count = batch_loss_sum(model, one_row)
        got, count = batch_loss_sum(model, rows)
    assert count == expected_count
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_rows_with_filler_give_the_padded_gradients(model, tiny_tokens):
    from finjust.objectives.sft import pad

    examples = tiny_tokens[:7]
    rows = pack(examples, row_tokens=60, multiple=ROW_MULTIPLE)
    assert rows.filler_tokens > 0 and rows.filler_mask().sum() == rows.filler_tokens
    got_grads, expected_grads = loss_and_grads(model, rows)[2], loss_and_grads(model, pad(examples))[2]
    for got, expected in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


#: tiny models whose attention ignores position ids: Bloom and MPT (ALiBi, attention code of their
#: own), OPT, gpt-oss and AFMoE (causal masks built without the position ids)
TINY_SIZES_IGNORING_POSITION_IDS = {
    "bloom": {"hidden_size": 32, "n_layer": 2, "n_head": 4},
    "mpt": {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 512},
    "opt": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 32,
            "word_embed_proj_dim": 16, "max_position_embeddings": 64},
    "gpt_oss": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 8, "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2,
                "sliding_window": 64},
    "afmoe": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 8, "intermediate_size": 32, "moe_intermediate_size": 16},
}  # fmt: skip


def _tiny_model_ignoring_position_ids(family: str):
    from transformers import AutoConfig

    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=300, **TINY_SIZES_IGNORING_POSITION_IDS[family])
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", sorted(TINY_SIZES_IGNORING_POSITION_IDS))
def test_models_that_ignore_position_ids_get_their_packed_examples_apart(family):
    from finjust.models.segment_attention import separates_packed_examples
    from finjust.objectives.sft import example_losses

    model = _tiny_model_ignoring_position_ids(family)
    assert not separates_packed_examples(model)
    first, changed, second = ([(7 * i + k) % 290 + 3 for i in range(20)] for k in range(3))
    batches = [[pack([TokenizedExample(head, head), TokenizedExample(second, second)])]
               for head in (first, changed)]  # fmt: skip
    items = [example_losses(model, b, torch.device("cpu"), None) for b in batches]
    assert items[0][1] == pytest.approx(items[1][1], abs=1e-6)  # the second example's loss, whatever the first
    alone = example_losses(model, [pack([TokenizedExample(second, second)])], torch.device("cpu"), None)
    assert items[0][1] == pytest.approx(alone[0], rel=1e-5)


def test_unpacked_rows_keep_each_segment_s_index_and_targets(tiny_tokens):
    from finjust.objectives.sft import pad, unpacked

    examples = tiny_tokens[:7]
    rows = pack(examples, row_tokens=60, multiple=ROW_MULTIPLE)
    padded = unpacked(rows)
    assert padded.input_ids.shape[0] == int((rows.position_ids == 0).sum())  # fillers are rows too
    assert padded.trained_tokens == rows.trained_tokens and padded.real_tokens == rows.input_ids.numel()
    by_ids = {tuple(r[m.bool()].tolist()): l[m.bool()][1:].tolist() for r, m, l in zip(
        padded.input_ids, padded.attention_mask, padded.labels)}  # fmt: skip
    reference = pad(examples)
    for ids, mask, labels in zip(reference.input_ids, reference.attention_mask, reference.labels):
        assert by_ids[tuple(ids[mask.bool()].tolist())] == labels[mask.bool()][1:].tolist()


def test_a_training_step_is_one_row_where_attention_runs_per_example(model, tiny_tokens):
    examples = [e for e in tiny_tokens if len(e.input_ids) > 8][:7]
    total = sum(len(e.input_ids) for e in examples)
    one_row = training_batches(model)(examples, True)
    assert one_row.input_ids.shape == (1, -(-total // ROW_MULTIPLE) * ROW_MULTIPLE)
    model.config.sliding_window = 4  # per-example attention would ignore it: a block mask spans each row
    rows = training_batches(model)(examples * 20, True)
    assert rows.input_ids.shape[0] == round(20 * total / ROW_TOKENS)
    assert rows.input_ids.shape[1] % ROW_MULTIPLE == 0
