"""The training loop's plan, accumulation arithmetic and the mode it leaves the model in."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from finjust.cli.main import main
from finjust.methods import get_method
from finjust.objectives import linear_ce
from finjust.objectives.sft import batch_loss_sum, make_batch
from finjust.recipe import TrainSection
from finjust.train.checkpoint import latest_checkpoint
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model
from finjust.train.plan import plan_steps


def test_plan_is_seeded_and_covers_each_epoch():
    a = plan_steps(10, batch_size=3, grad_accum=2, epochs=2, max_steps=None, seed=5)
    assert a == plan_steps(10, batch_size=3, grad_accum=2, epochs=2, max_steps=None, seed=5)
    assert a.steps_per_epoch == 2 and a.total_steps == 4
    first_epoch = sorted(i for step in a.steps[:2] for micro in step for i in micro)
    assert first_epoch == list(range(10))
    assert a.steps[0] != plan_steps(10, 3, 2, 2, None, seed=6).steps[0]


def test_max_steps_overrides_epochs():
    assert plan_steps(10, 2, 1, epochs=1, max_steps=12, seed=0).total_steps == 12


def _final(run):
    return load_file(str(latest_checkpoint(run / "checkpoints") / "trainable.safetensors"))


def test_accumulating_two_half_batches_equals_one_full_batch(tiny_recipe, tmp_path):
    recipe = str(tiny_recipe(method={"name": "full"}, train={"lr": 1e-3, "patience": None}))
    common = ["train.max_steps=3", "eval.generate=false"]
    assert main(["train", recipe, *common, "train.batch_size=8", f"output.dir={tmp_path / 'one'}"]) == 0
    assert main(["train", recipe, *common, "train.batch_size=4", "train.grad_accum=2",
                 f"output.dir={tmp_path / 'two'}"]) == 0  # fmt: skip
    one, two = _final(tmp_path / "one"), _final(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-6)
    losses = lambda run: [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()  # noqa: E731
                          if '"train"' in x]  # fmt: skip
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4)


def test_training_leaves_the_model_in_eval_mode_for_scoring(tiny_model_dir, tiny_tokens, tmp_path):
    # scoring right after training must not run the adapters' dropout
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_method("lora").apply(base, get_method("lora").options_class(dropout=0.3))
    cfg = TrainSection(epochs=1, max_steps=1, batch_size=4, lr=5e-3, patience=None, seed=0)
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / "ck",
        log=MetricsLog(tmp_path / "metrics.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: None,
    )  # fmt: skip
    train_model(model, setup)
    assert not any(module.training for module in model.modules())
    batch = make_batch(tiny_tokens[:4])
    with torch.no_grad():
        assert batch_loss_sum(model, batch)[0] == batch_loss_sum(model, batch)[0]


def test_a_hand_built_setup_trains_in_the_model_s_layout(tiny_model_dir, tiny_tokens, tmp_path):
    # LoopSetup's default batches are training_batches(model): one packed row a step for the tiny Llama
    model = get_method("lora").apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                     get_method("lora").options_class())  # fmt: skip
    shapes: list[tuple[int, ...]] = []

    def loss_sum(model, batch):
        shapes.append(tuple(batch.input_ids.shape))
        return batch_loss_sum(model, batch)

    cfg = TrainSection(epochs=1, max_steps=2, batch_size=8, patience=None, seed=0)
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / "ck",
        log=MetricsLog(tmp_path / "metrics.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: None, loss_sum=loss_sum,
    )  # fmt: skip
    train_model(model, setup)
    assert shapes and all(rows == 1 for rows, _ in shapes)
    assert setup.make_batch is None  # the caller's setup is left as given


@pytest.mark.parametrize(("step", "best", "evaluated", "due"), [
    (4, 4, True, True),  # a new best between save_every's multiples is saved
    (4, 2, True, False),
    (6, 4, True, True),  # save_every's multiple
    (5, 5, False, False),
])  # fmt: skip
def test_the_best_step_is_saved_whatever_save_every_says(step, best, evaluated, due):
    from finjust.train.checkpoint import LoopState
    from finjust.train.loop import _save_due

    cfg = TrainSection(save_every=3)
    state = LoopState(step=step, best_step=best)
    assert _save_due(cfg, plan_steps(40, 4, 1, 1.0, 10, seed=0), state, evaluated) is due


def test_a_run_resumed_before_its_first_checkpoint_starts_its_log_over(tiny_model_dir, tiny_tokens, tmp_path):
    torch.manual_seed(0)
    model = get_method("lora").apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                     get_method("lora").options_class())  # fmt: skip
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2):  # what the killed run had logged before dying
        log.append({"type": "train", "step": step})
    cfg = TrainSection(epochs=1, max_steps=3, batch_size=4, lr=5e-3, patience=None, seed=0)
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / "ck", log=log,
        device=torch.device("cpu"), autocast_dtype=None, on_event=lambda kind, payload: None,
    )  # fmt: skip
    train_model(model, setup, resume=True)
    assert [r["step"] for r in log.records()] == [1, 2, 3]


def test_what_a_killed_save_left_is_recovered_or_removed(tmp_path):
    from finjust.train.checkpoint import recover_interrupted_saves

    for name in (".step-000004.old", ".step-000006.x1y2z3_q.finjust-tmp", "step-000002", ".step-000002.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text(name)
    recover_interrupted_saves(tmp_path)
    # step 4 was moved aside and its replacement never arrived: it is the last complete copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002", "step-000004"]
    assert (tmp_path / "step-000004" / "state.json").read_text() == ".step-000004.old"
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_a_plan_with_no_examples_is_refused_not_looped_forever():
    from finjust.errors import DataError

    with pytest.raises(DataError, match="no training examples"):
        plan_steps(0, 4, 2, 1.0, None, seed=0)


def _tiny_lora(tiny_model_dir):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_method("lora").apply(base, get_method("lora").options_class())


def _setup(tiny_tokens, tmp_path, events, **train):
    cfg = TrainSection(**{"epochs": 1, "batch_size": 4, "lr": 5e-3, "patience": None, "seed": 0, **train})
    return LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / "ck",
        log=MetricsLog(tmp_path / "metrics.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: events.append((kind, payload)),
    )  # fmt: skip


def test_weights_that_train_get_fp32_masters_whatever_the_model_was_loaded_in(tiny_model_dir, tiny_tokens, tmp_path):
    model = _tiny_lora(tiny_model_dir).to(torch.bfloat16)  # a head or adapter that came in the base's bf16
    setup = _setup(tiny_tokens, tmp_path, [], max_steps=2)
    setup.autocast_dtype = torch.bfloat16
    train_model(model, setup)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)


def test_training_steps_may_take_the_frozen_heads_input_gradient_through_a_kept_copy(
        tiny_model_dir, tiny_tokens, tmp_path, monkeypatch):  # fmt: skip
    model = _tiny_lora(tiny_model_dir)
    planned = []
    monkeypatch.setattr(linear_ce, "_transposed_if_faster", lambda w, chunk: planned.append(w) or w.T.contiguous())
    train_model(model, _setup(tiny_tokens, tmp_path, [], max_steps=2))
    head = model.get_output_embeddings().weight
    assert len(planned) == 1 and planned[0] is head  # asked once, at the first step
    assert linear_ce._TRANSPOSED == {}  # and dropped after training


def test_forgetting_action_best_keeps_training_past_evaluations_over_the_budget(tiny_model_dir, tiny_tokens, tmp_path):
    model, events = _tiny_lora(tiny_model_dir), []
    setup = _setup(tiny_tokens, tmp_path, events, max_steps=6, eval_every=1, patience=2, forgetting_guard=0.9,
                   forgetting_action="best")  # fmt: skip
    setup.validation = [make_batch(tiny_tokens[:4])]
    setup.retention_probe = lambda model: 1.0 if len([e for e in events if e[0] == "eval"]) == 0 else 0.5
    state = train_model(model, setup)
    assert state.step == 6 and not state.stopped_early and state.best_step == 1


def test_a_forgetting_guard_without_validation_data_says_it_cannot_check(tiny_model_dir, tiny_tokens, tmp_path):
    events = []
    setup = _setup(tiny_tokens, tmp_path, events, max_steps=1, forgetting_guard=0.9)
    setup.retention_probe = lambda model: 1.0
    train_model(_tiny_lora(tiny_model_dir), setup)
    assert any(kind == "warning" and "needs validation data" in p["text"] for kind, p in events)


def test_pruned_checkpoints_leave_no_half_deleted_step(tmp_path, monkeypatch):
    """Pruning renames a checkpoint away before deleting it: a kill midway leaves a temp."""
    import shutil

    from finjust import atomic
    from finjust.train.checkpoint import recover_interrupted_saves

    for step in (1, 2):
        (tmp_path / f"step-00000{step}").mkdir()
        (tmp_path / f"step-00000{step}" / "state.json").write_text("{}")
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # killed before deleting anything
    atomic.remove_folder(tmp_path / "step-000001")
    assert latest_checkpoint(tmp_path).name == "step-000002"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("step-")] == ["step-000002"]
    monkeypatch.undo()
    recover_interrupted_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]


@pytest.mark.parametrize("reason", ["patience", "forgetting"])
def test_a_run_that_ran_every_step_did_not_stop_early(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch, reason):
    """The last step's evaluation may miss the patience or forgetting budget; nothing was cut short."""
    import finjust.train.loop as loop

    model, events = _tiny_lora(tiny_model_dir), []
    setup = _setup(tiny_tokens, tmp_path, events, max_steps=3, eval_every=1, patience=1, forgetting_guard=0.9)
    setup.validation = [make_batch(tiny_tokens[:4])]
    losses = iter([1.0, 0.5, 0.9] if reason == "patience" else [1.0, 0.9, 0.8])  # "patience": the last is worse
    probes = iter([1.0, 1.0, 0.5] if reason == "forgetting" else [1.0, 1.0, 1.0])
    monkeypatch.setattr(loop, "mean_loss", lambda *args, **kwargs: next(losses))
    setup.retention_probe = lambda model: next(probes)
    state = train_model(model, setup)
    evals = [payload for kind, payload in events if kind == "eval"]
    assert state.step == 3 and len(evals) == 3
    assert not state.stopped_early and state.stop_reason is None and not evals[-1]["stopped_early"]


def test_resuming_a_finished_run_says_so_after_the_plan_and_trains_nothing(tiny_model_dir, tiny_tokens, tmp_path):
    import io

    from finjust.cli.progress import ProgressPrinter

    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=2, save_every=1))
    events = []
    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, events, max_steps=2), resume=True)
    assert [kind for kind, _ in events] == ["start", "resumed"]
    printed = io.StringIO()
    for kind, payload in events:
        ProgressPrinter(printed)(kind, payload)
    assert printed.getvalue().splitlines()[1].endswith("resumed from step 2 of 2: every step had run")


@pytest.mark.parametrize(("name", "content"), [("trainable.safetensors", b"garbage"), ("optimizer.pt", b""),
                                               ("optimizer.pt", None)])  # fmt: skip
def test_a_damaged_checkpoint_is_named_with_how_to_go_on(tiny_model_dir, tiny_tokens, tmp_path, name, content):
    from finjust.errors import CheckpointError

    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=2, save_every=1))
    latest = latest_checkpoint(tmp_path / "ck")
    shutil.copytree(latest, tmp_path / "ck" / "step-000001")  # an earlier checkpoint to go back to
    damaged = latest / name
    if content is None:
        damaged.unlink()
    else:
        damaged.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=3), resume=True)
    message = str(caught.value)
    assert f"{damaged} is missing or damaged" in message and "resume from the checkpoint before it" in message


def test_a_damaged_only_checkpoint_says_the_run_starts_over_and_it_does(tiny_model_dir, tiny_tokens, tmp_path):
    from finjust.errors import CheckpointError

    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=2, save_every=2))
    first = latest_checkpoint(tmp_path / "ck")
    (first / "optimizer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"delete its folder .* to start the run over from step 0 \(no earlier"):
        train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=3), resume=True)
    shutil.rmtree(first)
    events = []
    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, events, max_steps=1), resume=True)
    assert ("warning", {"text": f"no checkpoint in {tmp_path / 'ck'} to resume from: training starts over from "
                                "step 0"}) in events  # fmt: skip


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_an_optimizer_file_holding_more_than_tensors_and_values_is_refused_not_run(
    tiny_model_dir, tiny_tokens, tmp_path, capsys
):  # fmt: skip
    from finjust.errors import CheckpointError
    from finjust.train.checkpoint import DIGESTS, _digest

    train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=2, save_every=1))
    folder = latest_checkpoint(tmp_path / "ck")
    saved = torch.load(folder / "optimizer.pt", weights_only=True)
    torch.save({**saved, "extra": _RunsCodeWhenUnpickled()}, folder / "optimizer.pt")
    digests = json.loads((folder / DIGESTS).read_text())
    (folder / DIGESTS).write_text(json.dumps({**digests, "optimizer.pt": _digest(folder / "optimizer.pt")}))
    with pytest.raises(CheckpointError, match="optimizer.pt is missing or damaged"):
        train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=3), resume=True)
    assert "unpickled" not in capsys.readouterr().out


def test_a_run_without_validation_extended_on_resume_ships_its_new_last_step(tiny_model_dir, tiny_tokens, tmp_path):
    first = train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=2))
    assert first.best_step == 2  # no validation: the last step
    extended = train_model(_tiny_lora(tiny_model_dir), _setup(tiny_tokens, tmp_path, [], max_steps=4), resume=True)
    assert extended.step == 4 and extended.best_step == 4  # not the step 2 that the first end chose


def test_a_run_stopped_by_patience_trains_on_when_resumed_with_more(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch):
    import finjust.train.loop as loop

    losses = iter([1.0, 1.5, 0.5, 0.4])
    monkeypatch.setattr(loop, "mean_loss", lambda *args, **kwargs: next(losses))

    def run(patience, events):
        setup = _setup(tiny_tokens, tmp_path, events, max_steps=4, eval_every=1, patience=patience)
        setup.validation = [make_batch(tiny_tokens[:4])]
        return train_model(_tiny_lora(tiny_model_dir), setup, resume=True)

    stopped = run(1, [])
    assert (stopped.step, stopped.stopped_early, stopped.stop_reason) == (2, True, "patience")
    events = []
    assert run(1, events).step == 2  # the same patience: still stopped, and it says why
    assert any(kind == "warning" and "raise it (or set null: no early stopping) to train on" in p["text"] for kind, p in events)
    resumed = run(3, [])
    assert (resumed.step, resumed.stopped_early, resumed.best_step) == (4, False, 4)


def test_a_nan_validation_loss_is_never_the_best(tiny_model_dir, tiny_tokens, tmp_path, monkeypatch):
    import finjust.train.loop as loop

    losses = iter([float("nan"), 2.0, 1.0])
    monkeypatch.setattr(loop, "mean_loss", lambda *args, **kwargs: next(losses))
    setup = _setup(tiny_tokens, tmp_path, [], max_steps=3, eval_every=1, patience=2)
    setup.validation = [make_batch(tiny_tokens[:4])]
    state = train_model(_tiny_lora(tiny_model_dir), setup)
    assert (state.best_step, state.best_loss, state.step) == (3, 1.0, 3)


def test_only_a_checkpoint_or_one_moved_aside_counts_as_one(tmp_path):
    from finjust.train.checkpoint import has_checkpoint

    assert not has_checkpoint(tmp_path / "none")
    (tmp_path / ".step-000001.x1y2.finjust-tmp").mkdir()  # a first save killed while writing
    assert not has_checkpoint(tmp_path)
    (tmp_path / ".step-000002.old").mkdir()  # a save killed while renaming its replacement in
    assert has_checkpoint(tmp_path)
    (tmp_path / ".step-000002.old").rmdir()
    (tmp_path / "step-000003").mkdir()
    assert has_checkpoint(tmp_path)


def test_a_resume_that_trains_on_retires_the_finished_outputs_first(tiny_model_dir, tiny_tokens, tmp_path):
    calls = []

    def run(max_steps, resume):
        setup = _setup(tiny_tokens, tmp_path, [], max_steps=max_steps)
        setup.on_more_steps = lambda: calls.append(max_steps)
        return train_model(_tiny_lora(tiny_model_dir), setup, resume=resume)

    run(2, resume=False)  # a new run has nothing finished to retire
    run(2, resume=True)  # every step had run: what it finished with still holds
    assert calls == []
    assert run(3, resume=True).step == 3 and calls == [3]


def test_a_plan_of_more_steps_than_a_run_can_hold_is_refused_at_once():
    from finjust.errors import RecipeError

    with pytest.raises(RecipeError, match=r"train.max_steps: 1,000,000,000,000,000,000,000,000,000,000 steps"):
        plan_steps(100, 8, 1, 3.0, 10**30, 0)
    with pytest.raises(RecipeError, match=r"train.epochs: "):
        plan_steps(1000, 8, 1, 1e9, None, 0)
    assert plan_steps(100, 8, 1, 3.0, 10_000, 0).total_steps == 10_000  # a long run still plans
