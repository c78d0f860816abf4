"""Regional compilation: the compiled training steps learn as the eager ones, and only they compile."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.methods import get_method
from finjust.models.forward_swap import repeated_blocks
from finjust.recipe import TrainSection
from finjust.train import compile as compile_mod
from finjust.train import loop
from finjust.train.log import MetricsLog
from finjust.train.loop import LoopSetup, train_model

pytestmark = pytest.mark.skipif(not compile_mod.has_cpp_compiler(), reason="inductor needs a C++ compiler")


@pytest.fixture
def ran(monkeypatch) -> Counter:
    """How often a training step called a compiled block forward and a recomputing one."""
    calls: Counter = Counter()
    real_compiled, real_recomputing = loop.compiled_forwards, loop.recomputing

    def counted(forward, name):
        def run(*args, **kwargs):
            calls[name] += 1
            return forward(*args, **kwargs)

        return run

    monkeypatch.setattr(loop, "compiled_forwards",
                        lambda model: {b: counted(f, "compiled") for b, f in real_compiled(model).items()})  # fmt: skip
    monkeypatch.setattr(loop, "recomputing", lambda forward, config: counted(real_recomputing(forward, config), "recomputed"))
    return calls


def _losses(
    tiny_model_dir, tiny_tokens, tmp_path, compile_: bool, recompute: bool = False, method: str = "lora"
) -> tuple[list[float], torch.nn.Module]:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    options = get_method(method).options_class(**({"layers": 1} if method == "freeze" else {}))
    model = get_method(method).apply(base, options)
    losses: list[float] = []
    cfg = TrainSection(epochs=1, max_steps=4, batch_size=4, warmup_ratio=0.0, scheduler="constant", lr=5e-3,
                       save_every=10**9, patience=None, seed=0, compile=compile_,
                       gradient_checkpointing=recompute)  # fmt: skip
    setup = LoopSetup(
        train=tiny_tokens, validation=[], cfg=cfg, lr=5e-3, checkpoints=tmp_path / f"ck-{compile_}-{recompute}",
        log=MetricsLog(tmp_path / f"metrics-{compile_}-{recompute}.jsonl"), device=torch.device("cpu"), autocast_dtype=None,
        on_event=lambda kind, payload: losses.append(payload["loss"]) if kind == "step" else None,
    )  # fmt: skip
    train_model(model, setup)
    return losses, model


def test_compiled_steps_give_the_eager_losses_and_leave_the_blocks_eager(tiny_model_dir, tiny_tokens, tmp_path, ran):
    eager, _ = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=False)
    assert ran == Counter()
    compiled, model = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=True)
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert ran == {"compiled": 4 * model.config.num_hidden_layers}  # every block of the 4 steps, compiled
    blocks = repeated_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    assert all("forward" not in vars(block) for block in blocks)  # evaluation and generation run eager


def test_one_graph_serves_the_blocks_traced_once(tiny_model_dir, tiny_tokens, tmp_path):
    # the first block reads the frozen embeddings' output, which needs no gradient: compiled, its
    # graph was a second one; and symbolic float constants made dynamo restart its first trace
    from torch._dynamo.utils import compilation_time_metrics, counters

    torch._dynamo.reset()
    counters.clear()
    compilation_time_metrics.clear()
    _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=True)
    assert counters["stats"]["unique_graphs"] == 1
    assert "compile_attempt_0" in compilation_time_metrics and "compile_attempt_1" not in compilation_time_metrics


def test_blocks_that_train_nothing_are_compiled_too(tiny_model_dir, tiny_tokens, tmp_path):
    # freeze's lower layers read and give no gradient: one graph of their own; the first trained
    # block, whose input needs no gradient either, runs eager
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, _ = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=False, method="freeze")
    compiled, _ = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=True, method="freeze")
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_blocks_recompute_in_backward(tiny_model_dir, tiny_tokens, tmp_path, ran):
    eager, _ = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=False)
    recomputed, model = _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=True, recompute=True)
    assert recomputed == pytest.approx(eager, rel=1e-3)
    block_calls = 4 * model.config.num_hidden_layers
    assert ran == {"recomputed": block_calls, "compiled": 2 * block_calls}  # compiled again in backward


@pytest.mark.parametrize(("setting", "steps", "expected"), [(None, 199, False), (None, 200, True), (False, 500, False),
                                                           (True, 1, True)])  # fmt: skip
def test_auto_compiles_only_long_cpu_runs(setting, steps, expected):
    assert compile_mod.should_compile(setting, torch.device("cpu"), steps) is expected


@pytest.mark.parametrize(("device", "steps", "expected"), [("cuda", 1499, False), ("cuda", 1500, True),
                                                          ("mps", 10_000, False)])  # fmt: skip
def test_auto_compiles_gpu_runs_only_from_their_own_longer_threshold(device, steps, expected):
    # an H100's compile took 128-135 s for 0.08-0.10 s a step: it pays off later than on a CPU; a device
    # nobody measured stays eager
    assert compile_mod.should_compile(None, torch.device(device), steps) is expected


def test_compiled_blocks_are_partitioned_under_the_memory_budget(monkeypatch, tiny_model_dir):
    # the partitioner reads the budget when a call compiles: each call must carry it, and leave
    # the process's own setting as it was
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    settings: list[tuple[float, bool]] = []
    monkeypatch.setattr(torch, "compile", lambda forward, dynamic: lambda *args, **kwargs: settings.append(
        (functorch_config.activation_memory_budget, dynamo_config.specialize_float)))  # fmt: skip
    before = functorch_config.activation_memory_budget, dynamo_config.specialize_float
    forwards = compile_mod.compiled_forwards(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    next(iter(forwards.values()))(torch.ones(1, requires_grad=True))
    assert settings == [(compile_mod.ACTIVATION_MEMORY_BUDGET, True)] and compile_mod.ACTIVATION_MEMORY_BUDGET < 1
    assert (functorch_config.activation_memory_budget, dynamo_config.specialize_float) == before


def test_auto_does_not_compile_without_the_python_headers(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_mod.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})  # no Python.h there
    assert compile_mod.has_cpp_compiler() is False
    assert compile_mod.should_compile(None, torch.device("cpu"), 10_000) is False


@pytest.mark.parametrize("setting", [True, None])
def test_a_kernel_build_failure_is_one_error_that_says_how_to_train(monkeypatch, tiny_model_dir, tiny_tokens,
                                                                    tmp_path, setting):  # fmt: skip
    from torch._inductor.exc import CppCompileError, InductorError

    from finjust.errors import CompileError

    def failing_build(*args, **kwargs):
        raise InductorError(CppCompileError(["g++"], "k.cpp:1:10: fatal error: Python.h: No such file"), None)

    monkeypatch.setattr("finjust.train.loop.compiled_forwards", lambda model: dict.fromkeys(
        repeated_blocks(model), failing_build))  # fmt: skip
    monkeypatch.setattr("finjust.train.loop.should_compile", lambda *args: True)
    with pytest.raises(CompileError) as raised:
        _losses(tiny_model_dir, tiny_tokens, tmp_path, compile_=setting)
    message = str(raised.value)
    assert message.startswith("train.compile: true" if setting else 'train.compile "auto"')
    assert "fatal error: Python.h" in message and "train.compile: false" in message and "\n" not in message
    assert "in its recipe.yaml, then --resume" in message  # a run that has checkpoints goes on eagerly


def test_a_compiler_named_by_cxx_is_what_the_build_failure_says_to_fix(monkeypatch):
    from torch._inductor.exc import CppCompileError, InductorError

    from finjust.errors import CompileError

    monkeypatch.setenv("CXX", "/opt/missing/g++")
    with pytest.raises(CompileError, match=r"fix or unset CXX \(it names '/opt/missing/g\+\+'\)"):
        with compile_mod.explained_build_failures(True, True):
            raise InductorError(CppCompileError(["/opt/missing/g++"], "not found"), None)


def test_a_long_run_left_eager_for_want_of_a_compiler_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_mod.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})  # no Python.h
    assert compile_mod.eager_for_want_of_a_compiler(None, torch.device("cpu"), 200) is True
    assert compile_mod.eager_for_want_of_a_compiler(None, torch.device("cpu"), 199) is False  # short: eager anyway
    assert compile_mod.eager_for_want_of_a_compiler(False, torch.device("cpu"), 10_000) is False  # asked for
