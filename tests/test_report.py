"""``finjust report``: one self-contained, escaped HTML page from a run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finjust.cli.main import main
from finjust.eval.report import build_report
from finjust.html import Markup, escape, table

# retention is measured by its own tests; here it is written into the scorecard by hand
FAST = ["train.max_steps=2", "train.eval_every=1", "eval.retention=false"]
RETENTION = {
    "general_text": {"base": 21.5, "tuned": 23.9, "retention": 0.9},
    "general_qa": {"base": 0.6, "tuned": 0.55, "retention": 0.917},
    "retention": 0.9,
}


def _compare_result() -> dict:
    row = {"description": "x", "metrics": {"test_loss": 2.0, "exact_match": 0.25}, "prompt_tokens": 30.0,
           "latency_s": 0.05, "peak_rss_mb": 900.0, "peak_gpu_mb": None, "citation_rate": None,
           "answers": []}  # fmt: skip
    versus = {"exact_match": {"base": 0.25, "tuned": 0.5, "base_ci": [0.0, 0.5], "tuned_ci": [0.25, 0.75],
                              "delta": 0.25, "delta_ci": [0.1, 0.4], "verdict": "better"}}  # fmt: skip
    return {
        "run_dir": "r", "n_test": 4, "headline": "exact_match", "confidence": 0.95, "settings": {"shots": 3},
        "rows": [{**row, "name": "base", "model": "base", "one_off": [], "vs_base": None},
                 {**row, "name": "hybrid", "model": "tuned", "citation_rate": 0.5, "vs_base": versus,
                  "metrics": {"test_loss": 1.0, "exact_match": 0.5},
                  "one_off": [{"kind": "training", "seconds": 12.0, "tokens": 3000, "steps": 2},
                              {"kind": "index", "seconds": 0.2, "documents": 29}]}],
    }  # fmt: skip


@pytest.fixture()
def run(tiny_recipe, tmp_path) -> Path:
    assert main(["train", str(tiny_recipe()), *FAST]) == 0
    folder = tmp_path / "run"
    card = json.loads((folder / "scorecard.json").read_text())
    card["answers"][0].update(base="<script>alert('x')</script> & more", tuned="Tents cost <b>27</b> euros")
    card["retention"] = RETENTION
    (folder / "scorecard.json").write_text(json.dumps(card))
    return folder


def test_report_has_plots_scorecard_retention_and_escaped_answers(run, capsys):
    assert main(["report", str(run)]) == 0
    assert f"report written to {run / 'report.html'}" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 2  # loss curves, metric intervals
    for name in ("test_loss", "perplexity", "exact_match", "token_f1", "rouge_l", "verdict"):
        assert name in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "Tents cost &lt;b&gt;27&lt;/b&gt; euros" in page
    assert "<script>" not in page and "<b>" not in page
    assert "Retention" in page and "general_text" in page and "0.917" in page
    assert "Fine-tuning vs prompting vs RAG" not in page  # no compare.json yet
    assert "http://" not in page and "https://" not in page  # nothing outside the page


def test_report_includes_the_comparison_table(run, tmp_path):
    (run / "compare.json").write_text(json.dumps(_compare_result()))
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(run), "--output", str(out), "--samples", "2"]) == 0
    page = out.read_text()
    assert "Fine-tuning vs prompting vs RAG" in page and "hybrid" in page
    assert "train 12 s, 3.0k tok + index 0.2 s" in page and "+0.25 [+0.1, +0.4]" in page
    assert "hybrid 50%" in page  # citation rate
    assert page.count("<img") == 3
    assert "2 of 8 test questions" in page


def test_report_of_a_run_still_training(tiny_recipe, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(tiny_recipe().read_text())
    records = [{"type": "train", "step": s, "loss": 3.0 / s, "seconds": 0.1, "tokens": 100} for s in (1, 2, 3)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = build_report(folder)
    assert page.count("<img") == 1 and "3 optimizer steps" in page and "has not finished" in page


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finjust run folder" in capsys.readouterr().err
    (tmp_path / "recipe.yaml").write_text("model: {}\n")
    assert main(["report", str(tmp_path / "recipe.yaml")]) == 2  # a file: not "cannot write report.html into it"
    assert "not a finjust run folder" in capsys.readouterr().err


def test_a_resume_that_trains_on_retires_the_old_weights_comparison(run):
    from finjust.methods import get_method
    from finjust.train.run_folder import RunFolder

    (run / "compare.json").write_text(json.dumps(_compare_result()))
    RunFolder(run).retire_finished(get_method("lora"))  # what a resume past the end does first
    assert not (run / "compare.json").exists()  # the report showed it as the new weights' comparison


@pytest.mark.parametrize(("name", "content", "named"), [
    ("scorecard.json", b"[]", "holds list, not the JSON object"),
    ("scorecard.json", b'{"base": \xe9}', "is unreadable ("),
    ("compare.json", b"[1]", "holds list, not the JSON object"),
    ("scorecard.json", b'{"answers": [{"tuned": "x"}]}', "does not hold what finjust writes there (KeyError"),
    ("metrics.jsonl", b'{"type": "train", "loss": 1.0}\n', "does not hold what finjust writes there (KeyError"),
    ("metrics.jsonl", b'{"type": "train", "step": 1, "loss": 1.0, "tokens": null}\n', "(TypeError"),
    ("metrics.jsonl", b'{"type": "train", "step": 1, "note": "\xe9"}\n', "is not UTF-8"),
])  # fmt: skip
def test_report_names_a_damaged_file_instead_of_a_traceback(run, capsys, name, content, named):
    (run / name).write_bytes(content)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    error = capsys.readouterr().err
    assert str(run / name) in error and named in error


@pytest.mark.parametrize("text", ["model: [\n", "just a string\n", "- a\n- list\n"])
def test_report_refuses_a_broken_recipe_clearly(tmp_path, capsys, text):
    (tmp_path / ".finjust-run").write_text("")  # a run folder whose recipe.yaml broke
    (tmp_path / "recipe.yaml").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'recipe.yaml'}: 1 problem" in capsys.readouterr().err


def test_html_table_escapes_cells_but_not_markup():
    html = table(["a<b"], [["<i>", Markup("<em>ok</em>")]]).html
    assert "<th>a&lt;b</th>" in html and "<td>&lt;i&gt;</td>" in html and "<td><em>ok</em></td>" in html
    assert escape('"quoted" & <tag>') == "&quot;quoted&quot; &amp; &lt;tag&gt;"


def test_the_report_names_why_a_run_stopped_early(run):
    card = json.loads((run / "scorecard.json").read_text())
    (run / "scorecard.json").write_text(json.dumps({**card, "stopped_early": True, "stop_reason": "forgetting"}))
    page = build_report(run)
    assert "Stopped early: retention fell under the forgetting guard" in page and "stopped improving" not in page


def test_the_report_states_the_sign_tests_level_the_run_used(run):
    card = json.loads((run / "scorecard.json").read_text())
    (run / "scorecard.json").write_text(json.dumps({**card, "confidence": 0.9}))
    page = build_report(run)
    assert "90% interval of the change" in page and "(p below 10%)" in page


@pytest.mark.parametrize("argv", [["report", "RUN"], ["eval", "RUN"], ["compare", "RUN"], ["serve", "RUN"],
                                  ["export", "RUN", "--format", "adapter"], ["train", "--resume", "RUN"]])  # fmt: skip
def test_a_run_folder_that_does_not_exist_is_named_so(tmp_path, capsys, argv):
    missing = tmp_path / "runs" / "typo"
    assert main([str(missing) if part == "RUN" else part for part in argv]) == 2
    assert f"{missing} does not exist: give" in capsys.readouterr().err


@pytest.mark.parametrize(("tokens", "shown"), [(565, "565 tok"), (3300, "3.3k tok"), (41_234, "41k tok")])
def test_one_off_training_tokens_are_shown_at_their_size(tokens, shown):
    from finjust.eval.compare import describe_one_off

    assert describe_one_off([{"kind": "training", "seconds": 5.0, "tokens": tokens}]) == f"train 5 s, {shown}"
