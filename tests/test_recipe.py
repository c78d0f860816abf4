"""Tests of the recipe: loading, validation (all problems at once), overrides, saving."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from finjust.errors import RecipeError
from finjust.methods.registry import METHODS, Method
from finjust.recipe import (
    DataSection,
    EvalSection,
    Recipe,
    TrainSection,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
    section_help,
)

FAKE = "fake_test_method"


@dataclass
class FakeOptions:
    r: int = field(default=16, metadata={"help": "Rank of the fake update."})
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")


class FakeMethod(Method):
    name = FAKE
    options_class = FakeOptions
    default_lr = 2e-4
    artifact_dir = "fake"

    def apply(self, model: Any, options: Any) -> Any:
        return model

    def save(self, model: Any, folder: Path) -> None:
        return None

    def load(self, base: Any, folder: Path) -> Any:
        return base

    def merge(self, model: Any) -> Any:
        return model


@pytest.fixture(autouse=True)
def fake_method() -> Iterator[str]:
    """Registers a throwaway method so the tests do not depend on the real ones."""
    METHODS._entries.pop(FAKE, None)
    METHODS.add(FAKE, FakeMethod())
    yield FAKE
    METHODS._entries.pop(FAKE, None)


MINIMAL = f"""\
model: {{name: smollm2-135m-instruct}}
data: {{train: my/train.jsonl, test: my/test.jsonl}}
method: {{name: {FAKE}}}
output: {{dir: runs/my-first}}
"""


def write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def with_minimal_data(folder: Path) -> Path:
    """``folder`` holding the data files MINIMAL names, so a recipe's problems are its own alone."""
    (folder / "my").mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (folder / "my" / name).write_text('{"text": "hello"}\n', encoding="utf-8")
    return folder


def minimal_dict(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"name": "smollm2-135m-instruct"},
        "data": {"train": "train.jsonl"},
        "method": {"name": FAKE},
        "output": {"dir": "runs/x"},
    }
    raw.update(sections)
    return raw


def problems_of(raw: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw, **kwargs)
    return info.value.problems


def test_minimal_recipe_loads_with_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.model.name == "smollm2-135m-instruct"
    assert (recipe.model.dtype, recipe.model.device) == ("auto", "auto")
    assert recipe.data.train == str(tmp_path / "my/train.jsonl")
    assert recipe.data.test == str(tmp_path / "my/test.jsonl")
    assert recipe.data.validation is None and recipe.data.format == "auto"
    assert recipe.output.dir == str(tmp_path / "runs/my-first")
    assert recipe.output.overwrite is False
    assert recipe.method.name == FAKE
    assert recipe.method.options == FakeOptions()
    assert recipe.train == TrainSection()
    assert recipe.eval == EvalSection()
    assert recipe.eval.metrics == ["exact_match", "token_f1", "rouge_l"]
    assert recipe.learning_rate == 2e-4


@pytest.mark.parametrize("name", ["train.jsonl", "qa.csv", "rows.parquet"])
def test_a_data_file_given_as_the_recipe_is_named_as_one(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text('{"instruction": "Hi", "output": "Hello"}\n')  # YAML would read it as a section
    with pytest.raises(RecipeError, match=rf"{name} is a data file \(\w+\), not a recipe: name it as data.train"):
        load_recipe(tmp_path / name)


def test_a_folder_given_as_the_recipe_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=rf"{tmp_path} is a folder; give the recipe's YAML file"):
        load_recipe(tmp_path)


def test_two_mistakes_are_reported_together(tmp_path: Path) -> None:
    path = write(with_minimal_data(tmp_path), MINIMAL + "train: {lrr: 0.001, batch_size: -1}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    error = info.value
    assert len(error.problems) == 2
    assert error.source == str(path)
    message = str(error)
    assert str(path) in message and "2 problems" in message
    assert "unknown key 'train.lrr'; did you mean 'lr'?" in message
    assert any("train.batch_size" in p and "-1" in p and "> 0" in p for p in error.problems)


def test_a_recipe_with_mistakes_lists_its_missing_data_files_too(tmp_path: Path) -> None:
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "test.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL + "train: {lrr: 0.001}\n"))
    problems = info.value.problems
    assert len(problems) == 2, problems  # the mistake and the one missing file, in one run
    assert problems[1] == f"{tmp_path / 'my' / 'train.jsonl'}: cannot open: no such file or folder; check the " \
        "path (data.train; a relative path starts at the recipe's own folder when the recipe file gives it, at the " \
        "current folder when an override or the command line does)"


def test_missing_files_are_listed_beside_a_malformed_data_entry(tmp_path: Path) -> None:
    text = MINIMAL.replace("train: my/train.jsonl", "train: [{path: gone.jsonl, weight: 101}, lost.jsonl]")
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    problems = "\n".join(info.value.problems)
    assert "data.train[0].weight" in problems  # the malformed entry, once
    assert f"{tmp_path / 'lost.jsonl'}: cannot open" in problems and f"{tmp_path / 'my' / 'test.jsonl'}: cannot" \
        in problems and "gone.jsonl: cannot" not in problems  # fmt: skip


def test_more_steps_than_a_run_plans_are_refused_with_the_recipe() -> None:
    with pytest.raises(RecipeError, match=r"train.max_steps: 20,000,000 steps of 8 examples plan more than"):
        recipe_from_dict(minimal_dict(train={"max_steps": 20_000_000}))
    assert recipe_from_dict(minimal_dict(train={"max_steps": 1_000_000})).train.max_steps == 1_000_000


def test_a_valid_recipe_loads_without_its_data_files(tmp_path: Path) -> None:
    # export, eval and report read a run's recipe; its data may have moved since (the data check names them)
    assert load_recipe(write(tmp_path, MINIMAL)).data.train == str(tmp_path / "my" / "train.jsonl")


def test_checks_across_keys_run_beside_a_sections_other_mistakes() -> None:
    problems = problems_of(minimal_dict(
        data={"train": "t", "test_fraction": 0, "max_length": 0},
        eval={"metrics": ["exact_match", "bleu"], "confidence": 2},
    ))  # fmt: skip
    assert len(problems) == 4, problems
    assert any("data.max_length" in p for p in problems) and any("eval.confidence" in p for p in problems)
    assert any("unknown metric 'bleu'" in p for p in problems)  # needs eval's other keys valid before
    assert any("needs test examples" in p for p in problems)  # needs data's other keys valid before


def test_overrides_apply_and_coerce_types(tmp_path: Path) -> None:
    overrides = [
        "train.lr=1e-4",
        "train.epochs=2",
        "data.test=null",
        "method.r=8",
        "method.targets=[q_proj]",
        "eval.metrics=[exact_match]",
        "eval.generate=false",
        "train.max_steps=5",
    ]
    recipe = load_recipe(write(tmp_path, MINIMAL), overrides)
    assert recipe.train.lr == pytest.approx(1e-4) and isinstance(recipe.train.lr, float)
    assert recipe.train.epochs == 2.0 and isinstance(recipe.train.epochs, float)
    assert recipe.train.max_steps == 5
    assert recipe.data.test is None
    assert recipe.method.options == FakeOptions(r=8, targets=("q_proj",))
    assert recipe.eval.metrics == ["exact_match"]
    assert recipe.eval.generate is False
    assert recipe.learning_rate == pytest.approx(1e-4)


def test_bad_overrides_are_reported_with_other_problems(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(with_minimal_data(tmp_path), MINIMAL), ["train.lr", "trian.lr=1", "train.batch_size=0"])
    problems = info.value.problems
    assert len(problems) == 3
    assert "'train.lr'" in problems[0] and "section.key=value" in problems[0]
    assert "unknown section 'trian'; did you mean 'train'?" in problems[1]
    assert "train.batch_size" in problems[2]


def test_apply_overrides_is_pure_and_rejects_bad_ones() -> None:
    raw = minimal_dict(train={"lr": 0.1})
    result = apply_overrides(raw, ["train.lr=0.5", "eval.batch_size=4"])
    assert result["train"] == {"lr": 0.5} and result["eval"] == {"batch_size": 4}
    assert raw["train"] == {"lr": 0.1} and "eval" not in raw
    with pytest.raises(RecipeError, match="section.key=value"):
        apply_overrides(raw, ["=3"])
    with pytest.raises(RecipeError, match="not a mapping"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=2"])


def test_missing_required_fields_and_sections() -> None:
    raw = {"model": {"dtype": "float32"}, "data": {"train": "t.jsonl"}, "method": {"name": FAKE}}
    problems = problems_of(raw)
    assert any(p.startswith("missing required key 'model.name'") for p in problems)
    assert any(p.startswith("missing required key 'output.dir'") for p in problems)
    assert len(problems) == 2
    assert "missing required key 'data.train'" in problems_of(minimal_dict(data={}))[0]


def test_unknown_section_is_suggested() -> None:
    problems = problems_of(minimal_dict(trian={"lr": 0.1}))
    assert problems == ["unknown section 'trian'; did you mean 'train'?"]
    problems = problems_of(minimal_dict(zzz=1))
    assert "valid sections: model, data, method, train, eval, output" in problems[0]


def test_section_that_is_not_a_mapping() -> None:
    problems = problems_of(minimal_dict(train=[1, 2]))
    assert problems == ["section 'train' must be a mapping of keys to values, got [1, 2] (list)"]


def test_type_and_value_errors_name_key_value_and_expectation() -> None:
    problems = problems_of(minimal_dict(
        model={"name": 7, "dtype": "fp16"},
        train={"batch_size": True, "epochs": "three", "scheduler": "cosine", "warmup_ratio": 1},
        eval={"metrics": ["exact_match", 3]},
        output={"dir": "", "overwrite": "yes"},
    ))
    expected = [
        "model.name: expected str, got 7 (int); YAML read it as that: quote it to keep it as text",
        "model.dtype: expected one of auto, bfloat16, float32, got 'fp16'",
        "train.epochs: expected float, got 'three' (str)",
        "train.batch_size: expected int, got True (bool)",
        "train.warmup_ratio: expected >= 0 and < 1, got 1.0",
        "eval.metrics: expected a list of str, got ['exact_match', 3] (list)",
        "output.dir: expected a non-empty value, got ''",
        "output.overwrite: expected bool, got 'yes' (str)",
    ]
    assert problems == expected


def test_int_accepted_where_float_expected() -> None:
    recipe = recipe_from_dict(minimal_dict(train={"lr": 1, "weight_decay": 0}))
    assert recipe.train.lr == 1.0 and isinstance(recipe.train.lr, float)
    assert isinstance(recipe.train.weight_decay, float)


def test_held_out_fractions_must_leave_training_data() -> None:
    half = {"validation_fraction": 0.5, "test_fraction": 0.5}
    problems = problems_of(minimal_dict(data={"train": "t", **half}))
    assert len(problems) == 1 and "validation_fraction + data.test_fraction" in problems[0]
    # with a test file, test_fraction is unused
    recipe = recipe_from_dict(minimal_dict(data={"train": "t", "test": "u", **half}))
    assert recipe.data.test == "u"


def test_one_column_mapped_to_two_fields_is_refused() -> None:
    columns = {"instruction": "question", "output": "question", "input": "context"}
    problems = problems_of(minimal_dict(data={"train": "t", "columns": columns}))
    assert len(problems) == 1 and "the column 'question' is mapped to instruction and output" in problems[0]


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: x}\ndata: {train: t}\ntrain: {lr: -5}\noutput: {dir: y}\ntrain: {epochs: 2}\n")
    with pytest.raises(RecipeError, match=r"line 5, column 1: key 'train' appears twice \(also on line 3\)"):
        load_recipe(path)
    nested = write(tmp_path, "model: {name: x, name: z}\ndata: {train: t}\noutput: {dir: y}\n", "nested.yaml")
    with pytest.raises(RecipeError, match="key 'name' appears twice"):
        load_recipe(nested)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: x}\ndata:\n  train: [unclosed\noutput: {dir: y}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "invalid YAML at line" in message
    bad = write(tmp_path, "model:\n  name: x\n   dtype: auto\n", "bad.yaml")
    with pytest.raises(RecipeError, match="line 3"):
        load_recipe(bad)


def test_missing_empty_or_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="empty file"):
        load_recipe(write(tmp_path, ""))
    with pytest.raises(RecipeError, match=r"got \[1, 2\] \(list\)"):
        load_recipe(write(tmp_path, "[1, 2]\n"))


def test_method_options_are_validated() -> None:
    problems = problems_of(minimal_dict(method={"name": FAKE, "rr": 8, "alpha": "big", "targets": "q"}))
    assert problems == [
        "unknown key 'method.rr'; did you mean 'r'?",
        "method.alpha: expected float, got 'big' (str)",
        "method.targets: expected a list of str, got 'q' (str)",
    ]
    recipe = recipe_from_dict(minimal_dict(method={"name": FAKE, "r": 4, "alpha": 8}))
    assert recipe.method.options == FakeOptions(r=4, alpha=8.0)


def test_unknown_method_lists_valid_names() -> None:
    problems = problems_of(minimal_dict(method={"name": "fake_test_methd", "r": 8}))
    assert len(problems) == 1
    assert problems[0].startswith("method.name: unknown method 'fake_test_methd'; valid methods: ")
    assert problems[0].endswith(f"; did you mean '{FAKE}'?") and f"{FAKE}," in problems[0]


def test_built_in_lora_options() -> None:
    recipe = recipe_from_dict(minimal_dict(method={"name": "lora", "r": 4}))
    assert recipe.method.options.r == 4
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    problems = problems_of(minimal_dict(method={"name": "lora", "rr": 4}))
    assert problems == ["unknown key 'method.rr'; did you mean 'r'?"]


def test_yaml_exponent_floats_parse_as_numbers(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL + "train: {lr: 1e-4, weight_decay: 1E-2}\n"))
    assert recipe.train.lr == pytest.approx(1e-4)
    assert recipe.train.weight_decay == pytest.approx(0.01)


def test_round_trip_through_save_and_load(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL), ["method.r=4", "train.lr=3e-5", "eval.max_examples=10"])
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    saved = tmp_path / "run" / "recipe.yaml"
    save_recipe(recipe, saved)
    assert load_recipe(saved) == recipe
    assert os.listdir(saved.parent) == ["recipe.yaml"]  # no temporary file left behind
    plain = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert plain["method"] == {"name": FAKE, "r": 4, "alpha": 32.0, "targets": ["q_proj", "v_proj"]}
    save_recipe(Recipe(**{**recipe.__dict__, "train": TrainSection(epochs=1.0)}), saved)
    assert load_recipe(saved).train.epochs == 1.0


def test_a_string_that_looks_like_an_exponent_float_reads_back_a_string(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL), ["data.system_prompt='1e3'"])
    assert recipe.data.system_prompt == "1e3"
    saved = tmp_path / "run" / "recipe.yaml"
    save_recipe(recipe, saved)
    assert load_recipe(saved) == recipe  # --resume and eval re-read it


def test_relative_paths_resolve_against_recipe_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "local-model").mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = (f"model: {{name: local-model}}\ndata: {{train: d/train.jsonl, validation: /abs/val.jsonl}}\n"
            f"method: {{name: {FAKE}}}\noutput: {{dir: ../runs/a}}\n")
    recipe = load_recipe(folder / write(folder, text).name, ["data.test=t.jsonl"])
    assert recipe.model.name == str(folder / "local-model")
    assert recipe.data.train == str(folder / "d/train.jsonl")
    assert recipe.data.validation == "/abs/val.jsonl"
    assert recipe.data.test == str(elsewhere / "t.jsonl")  # from an override: current directory
    assert recipe.output.dir == str(folder.parent / "runs" / "a")  # ".." taken: the run's saved paths read plainly
    gguf = load_recipe(folder / "recipe.yaml", ["model.name=m.gguf"])
    assert gguf.model.name == str(elsewhere / "m.gguf")


def test_recipe_from_dict_resolves_only_with_base_dir(tmp_path: Path) -> None:
    raw = minimal_dict(model={"name": "models/tiny"})
    assert recipe_from_dict(raw).data.train == "train.jsonl"
    recipe = recipe_from_dict(raw, base_dir=tmp_path)
    assert recipe.data.train == str(tmp_path / "train.jsonl")
    assert recipe.model.name == str(tmp_path / "models/tiny")
    assert recipe_from_dict(minimal_dict(), base_dir=tmp_path).model.name == "smollm2-135m-instruct"


def test_section_help_lists_every_field() -> None:
    text = section_help(FAKE)
    for section, cls in [("data", DataSection), ("train", TrainSection), ("eval", EvalSection)]:
        for name in cls.__dataclass_fields__:
            assert f"{section}.{name}:" in text
    assert "model.name: str (required)" in text
    assert "train.lr: float or null = null" in text
    assert "Peak learning rate" in text
    assert "[one of cosine, linear, constant]" in text
    assert "eval.metrics: a list of str = [exact_match, token_f1, rouge_l]" in text
    assert "output.overwrite: bool = false" in text
    assert "method.r: int = 16" in text and "Rank of the fake update." in text
    assert "method.options" not in text


def test_section_help_without_a_method_lists_every_method_s_options() -> None:
    from finjust.methods import METHODS

    text = section_help()
    assert all(f"options of method {name}:" in text for name in METHODS.names())
    assert "method.virtual_tokens: int = 20" in text and "options of method full: none" in text


def test_override_value_that_is_not_yaml() -> None:
    with pytest.raises(RecipeError, match="not valid YAML"):
        apply_overrides(minimal_dict(), ["eval.metrics=[unclosed"])


@pytest.mark.parametrize("data", [{"test_fraction": 0}, {"test_count": 0}])
def test_a_recipe_that_holds_out_no_test_examples_is_refused(data) -> None:
    problems = problems_of(minimal_dict(data={"train": "t.jsonl", **data}))
    assert any("scorecard needs test examples" in p for p in problems)
    assert recipe_from_dict(minimal_dict(data={"train": "t.jsonl", "test": "held.jsonl", **data}))


def test_numbers_no_run_could_use_are_refused_with_the_recipe() -> None:
    nan, inf = float("nan"), float("inf")
    problems = problems_of(minimal_dict(
        train={"lr": inf, "weight_decay": nan, "epochs": inf, "seed": 10**20, "threads": 10**11, "replay": 1e9},
        method={"name": FAKE, "alpha": nan},
        data={"train": [{"path": "t.jsonl", "weight": inf}, {"path": "u.jsonl", "weight": 1e300}]},
    ))  # fmt: skip
    assert "train.lr: expected a finite number, got inf" in problems
    assert "train.weight_decay: expected a finite number, got nan" in problems
    assert "train.epochs: expected a finite number, got inf" in problems
    assert f"train.seed: expected >= 0 and <= {2**32 - 1}, got {10**20}" in problems
    assert f"train.threads: expected > 0 and <= 4096, got {10**11}" in problems
    assert "train.replay: expected >= 0 and <= 10, got 1000000000.0" in problems
    assert "method.alpha: expected a finite number, got nan" in problems
    assert "data.train[0].weight: expected a number > 0 and <= 100, got inf" in problems
    assert "data.train[1].weight: expected a number > 0 and <= 100, got 1e+300" in problems


def test_an_empty_held_out_path_is_refused_not_read_as_none() -> None:
    problems = problems_of(minimal_dict(data={"train": "t", "test": "", "validation": ""}))
    assert problems == ["data.validation: expected a non-empty value, got ''",
                        "data.test: expected a non-empty value, got ''"]  # fmt: skip


def test_a_source_with_keys_of_mixed_types_is_refused_not_a_traceback() -> None:
    problems = problems_of(minimal_dict(data={"train": [{"path": "t.jsonl", 1: "a", "b": "c", None: 2}]}))
    assert problems == ["data.train[0]: unknown keys 1, None, 'b'; valid keys: path, weight, split"]


def test_metric_options_a_metric_needs_are_checked_with_the_recipe() -> None:
    problems = problems_of(minimal_dict(eval={"metrics": ["format", "brand_mention"]}))
    assert problems == ["the format metric needs eval.metric_options.format.regex or .json_schema",
                        "brand_mention needs eval.metric_options.brand_mention.names"]  # fmt: skip
    options = {"format": {"regex": "(", "json_schema": {"type": 5}}}
    problems = problems_of(minimal_dict(eval={"metrics": ["format"], "metric_options": options}))
    assert problems[0].startswith("eval.metric_options.format.regex: '(' is not a regular expression")
    assert problems[1].startswith("eval.metric_options.format.json_schema: not a JSON schema")


def test_yaml_merge_keys_work(tmp_path: Path) -> None:
    text = MINIMAL + "eval_defaults: &quick {max_new_tokens: 4}\neval:\n  <<: *quick\n  generate: false\n"
    with pytest.raises(RecipeError, match="unknown section 'eval_defaults'"):  # merged, then judged as a recipe
        load_recipe(write(tmp_path, text))
    merged = MINIMAL + "eval:\n  <<: {max_new_tokens: 4}\n  generate: false\n"
    recipe = load_recipe(write(tmp_path, merged, "merged.yaml"))
    assert recipe.eval.max_new_tokens == 4 and recipe.eval.generate is False


def test_an_override_whose_value_yaml_would_cut_at_a_comment_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError, match=r"YAML reads what follows ' #' as a comment.*output.dir='\"run #2\"'"):
        load_recipe(path, ["output.dir=run #2"])
    assert load_recipe(path, ["output.dir='run #2'"]).output.dir.endswith("run #2")
    assert load_recipe(path, ["data.system_prompt=Use C# and F#"]).data.system_prompt == "Use C# and F#"


def test_a_lora_alpha_that_would_train_nothing_is_refused() -> None:
    from finjust.methods.registry import get_method

    get_method("lora")  # registers the built-in methods
    for alpha in (0, -5):  # alpha / r scales the update: 0 trains nothing, a negative one flips it
        problems = problems_of(minimal_dict(method={"name": "lora", "alpha": alpha}))
        assert problems == [f"method.alpha: expected > 0, got {float(alpha)}"]


def test_an_override_given_twice_is_refused_not_silently_replaced(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError, match=r"override 'train.lr=0.1': sets what 'train.lr=-1' set already"):
        load_recipe(path, ["train.lr=-1", "train.lr=0.1"])
    with pytest.raises(RecipeError, match=r"override 'train=\{epochs: 1\}': sets what 'train.lr=0.5' set already"):
        load_recipe(path, ["train.lr=0.5", "train={epochs: 1}"])
    assert load_recipe(path, ["train.lr=0.5", "train.epochs=1"]).train.epochs == 1.0


def test_text_that_yaml_reads_as_another_type_gets_a_quoting_hint(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["data.system_prompt=Note: be brief", "output.dir=2024-01-01", "train.lr=yes"])
    problems = info.value.problems
    assert "data.system_prompt: expected str or null, got {'Note': 'be brief'} (dict); YAML read it as that: " \
           "quote it to keep it as text" in problems
    assert any(p.startswith("output.dir: expected str, got datetime.date(2024, 1, 1)") and "quote it" in p
               for p in problems)  # fmt: skip
    assert "train.lr: expected float or null, got True (bool)" in problems  # a number field: no quoting hint


@pytest.mark.parametrize(("train", "problem"), [([], "data.train: expected a non-empty value, got []"),
                                                ("", "data.train: expected a non-empty value, got ''"),
                                                ([""], "data.train[0]: expected a non-empty path")])  # fmt: skip
def test_an_empty_training_source_is_one_problem(train, problem) -> None:
    assert problems_of(minimal_dict(data={"train": train})) == [problem]


def test_overrides_given_as_one_string_are_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(minimal_dict()))
    with pytest.raises(RecipeError) as refused:
        load_recipe(path, "train.lr=1e-4")
    assert refused.value.problems == ["overrides: expected a list of 'section.key=value' strings, got the string "
                                      "'train.lr=1e-4': pass ['train.lr=1e-4']"]  # fmt: skip


def test_counts_replace_their_fractions_in_the_held_out_check():
    from finjust.recipe import recipe_from_dict

    base = {"model": {"name": "m"}, "output": {"dir": "o"}}
    both = {"train": "t.jsonl", "validation_count": 5, "test_count": 5, "validation_fraction": 0.5, "test_fraction": 0.5}
    assert recipe_from_dict({**base, "data": both}).data.test_count == 5  # not "0.5 + 0.5 must be < 1": counts win
