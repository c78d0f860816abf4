"""``finjust data check`` and the gate ``finjust train`` runs first."""

from __future__ import annotations

import json

from finjust.cli.demo import DEMO_RECIPE
from finjust.cli.main import main


def test_check_a_recipe_writes_text_json_and_html(tiny_recipe, tmp_path, capsys):
    report_json, page = tmp_path / "r.json", tmp_path / "r.html"
    status = main(["data", "check", str(tiny_recipe()), "--json", str(report_json), "--html", str(page)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "quality gate: passed" in out and "tokens: mean" in out
    assert json.loads(report_json.read_text())["gate"]["passed"] is True
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_the_files_are_written_before_the_table_whose_reader_may_be_gone(tiny_recipe, tmp_path, monkeypatch):
    # `finjust data check r.yaml --json r.json | head`: a closed pipe must not lose the report
    import finjust.cli.data

    report_json, page = tmp_path / "r.json", tmp_path / "r.html"
    written_when_shown = []
    monkeypatch.setattr(finjust.cli.data, "show", lambda text: written_when_shown.append(
        report_json.is_file() and page.is_file()))  # fmt: skip
    assert main(["data", "check", str(tiny_recipe()), "--json", str(report_json), "--html", str(page),
                 "--no-tokens"]) == 0  # fmt: skip
    assert written_when_shown == [True]


def test_a_report_may_not_replace_the_recipe_or_data_it_reads(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe()
    before = recipe.read_text()
    assert main(["data", "check", str(recipe), "--no-tokens", "--html", str(recipe)]) == 2
    assert f"--html {recipe}: the command reads it" in capsys.readouterr().err and recipe.read_text() == before
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text('{"instruction": "Hi", "output": "Hello"}\n')
    # a report inside a data folder would be read as data by the next run
    assert main(["data", "check", str(data), "--no-tokens", "--json", str(data / "r.json")]) == 2
    assert not (data / "r.json").exists()


def test_an_override_split_by_the_shell_is_named_not_taken_for_a_data_file(tiny_recipe, capsys):
    assert main(["data", "check", str(tiny_recipe()), "train.lr", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "'train.lr': no such file, nor an override (section.key=value, one argument" in err and "'1e-4'" in err


def test_check_the_demo_recipe_without_a_tokenizer(capsys):
    assert main(["data", "check", str(DEMO_RECIPE), "--no-tokens"]) == 0
    assert "372 conversation records" in capsys.readouterr().out


def test_check_bare_files_with_columns_and_a_model(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "qa.csv"
    things = ["kayak", "tent", "stove", "lamp", "canoe", "paddle", "jacket", "boots", "rope", "map", "tarp", "mug"]
    data.write_text("question,answer\n" + "".join(f"What does the {t} cost?,The {t} costs {i} euros.\n"
                                                   for i, t in enumerate(things)))  # fmt: skip
    status = main(["data", "check", str(data), "data.columns={instruction: question, output: answer}",
                   "--model", str(tiny_model_dir), "--seed", "3"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "12 conversation records" in out and "tokens: mean" in out


def test_leakage_fails_the_check_and_stops_training_before_the_model_loads(tiny_recipe, write_jsonl, tmp_path, capsys):
    from conftest import ASSETS

    leaked = (ASSETS / "tiny_train.jsonl").read_text().splitlines()[:3]
    recipe = tiny_recipe(data={"test": str(write_jsonl("leaky_test.jsonl", leaked))})
    assert main(["data", "check", str(recipe)]) == 1
    assert "quality gate: FAILED on leakage" in capsys.readouterr().out
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "data quality gate failed" in err and "leakage: 3" in err and "leaky_test.jsonl:1" in err
    run = tmp_path / "run"
    assert (run / "data_report.json").is_file() and not (run / "checkpoints").exists()


def test_training_refuses_data_that_no_objective_trains(tiny_recipe, write_jsonl, tmp_path, capsys):
    # classification data train with the classification objective (tests/test_classification.py)
    records = [{"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"poor reply {i}"}
               for i in range(12)]  # fmt: skip
    recipe = tiny_recipe(data={"train": str(write_jsonl("pref.jsonl", records)), "test": None})
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "the data are preference records, which no objective trains yet" in err
    run = tmp_path / "run"
    assert f"warning: the run stopped before its first checkpoint; {run} keeps what it wrote: once the cause is " \
           "fixed, the same command starts it again" in err
    assert main(["train", str(recipe)]) == 2  # as the warning said: the same refusal again, not "exists"
    assert "the data are preference records" in capsys.readouterr().err


def test_bad_options_are_one_line_errors(capsys):
    assert main(["data", "check", "a.jsonl", "train.lr=1"]) == 2
    assert "only data.* overrides apply" in capsys.readouterr().err


def test_a_missing_file_is_an_error_exit_2_not_a_failed_gate(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "*.jsonl"), "--no-tokens"]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "not expanded: list the files" in err


def test_a_missing_source_of_a_recipe_names_its_key(tiny_recipe, tmp_path, capsys):
    assert main(["data", "check", str(tiny_recipe(data={"test": str(tmp_path / "r" / "t.jsonl")})), "--no-tokens"]) == 2
    assert "no such file or folder; check the path (data.test; a relative path starts at the recipe's own folder " \
           "when the recipe file gives it, at the current folder when an override or the command line does)" \
           in capsys.readouterr().err


def test_a_recipe_with_test_or_validation_files_beside_it_is_refused(tiny_recipe, capsys):
    assert main(["data", "check", str(tiny_recipe()), "--test", "other.jsonl", "--no-tokens"]) == 2
    assert "--test other.jsonl" in capsys.readouterr().err


def test_an_output_path_that_cannot_be_written_is_refused_before_the_check(tiny_recipe, tmp_path, capsys):
    # argparse's usage error, before any data is read
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--json", str(tmp_path / "new") + "/"]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--json: {tmp_path} is a folder; give a file path" in err
    assert "Traceback" not in err
    # a name longer than the filesystem allows
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--json", str(tmp_path / ("a" * 300))]) == 2
    assert "File name too long" in capsys.readouterr().err


def test_overrides_may_follow_options(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--json", str(out), "data.max_length=64"]) == 0
    assert json.loads(out.read_text())["settings"]["max_length"] == 64
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_whole_section_override_after_an_option_gets_the_recipe_s_message(tiny_recipe, tmp_path, capsys):
    assert main(["data", "check", str(tiny_recipe()), "--no-tokens", "--json", str(tmp_path / "r.json"),
                 "data=5"]) == 2  # fmt: skip
    assert "section 'data' must be a mapping" in capsys.readouterr().err  # was argparse's "unrecognized arguments"


def test_files_of_several_tasks_are_named_with_each_tasks_first_record(write_jsonl, capsys):
    chat = write_jsonl("chat.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)])
    labelled = write_jsonl("labels.jsonl", [{"text": f"t{i}", "label": "x"} for i in range(5)])
    assert main(["data", "check", str(chat), str(labelled)]) == 1
    out = capsys.readouterr().out
    assert f"(5 classification, the first at {labelled}:1; 3 chat, the first at {chat}:1)" in out


def test_a_pool_that_cannot_be_split_says_its_table_counts_it_all_as_train(write_jsonl, tmp_path, capsys):
    path = write_jsonl("g.jsonl", [{"instruction": f"q{i}", "output": f"a{i}", "doc": "same"} for i in range(20)])
    assert main(["data", "check", str(path), "data.group_by=doc"]) == 1
    out = capsys.readouterr().out
    assert "grouping the 20 records into 1 group holds out no test records: the smallest group has 20" in out
    assert "(the pool could not be split, see the invalid finding: all of it is counted as train here)" in out
