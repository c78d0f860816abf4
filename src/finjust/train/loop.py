"""The training loop: packed micro-batches, gradient accumulation, validation, early stopping.

Why our own loop rather than ``transformers.Trainer``: we need atomic checkpoints that a
SIGKILL cannot corrupt, resume with the exact data order, padding-free packing with the
cache disabled (the Trainer leaves ``use_cache`` on, which silently breaks packing
boundaries; see shared/PERF-NOTES.md) and a loss computed only on answer tokens. The
pieces are torch's and transformers' own: AdamW, ``get_scheduler``, gradient clipping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from transformers import get_scheduler

from finjust.errors import CheckpointError
from finjust.events import EventHandler
from finjust.models.forward_swap import repeated_blocks, swapped_forwards
from finjust.models.lean_activations import lean_activations
from finjust.models.load import align_layer_norm_dtypes, autocast
from finjust.models.lora_addmm import lora_addmm_forwards
from finjust.objectives.linear_ce import keep_transposed_head
from finjust.objectives.sft import batch_loss_sum, mean_loss, plain_head, training_batches
from finjust.recipe.sections import SCHEDULERS
from finjust.train.checkpoint import (
    LoopState,
    latest_checkpoint,
    recover_interrupted_saves,
    restore_checkpoint,
    save_checkpoint,
)
from finjust.train.compile import (
    compiled_forwards,
    eager_for_want_of_a_compiler,
    explained_build_failures,
    should_compile,
)
from finjust.train.log import MetricsLog
from finjust.train.plan import StepPlan, plan_steps
from finjust.train.recompute import recomputing, should_recompute

#: a validation loss must fall by more than this to count as an improvement
MIN_IMPROVEMENT = 1e-4


@dataclass
class LoopSetup:
    """Everything the loop needs besides the model.

    ``make_batch`` and ``loss_sum`` are the objective's: SFT's packed batches and token loss
    by default; a classification run passes its padded batches and cross-entropy over labels.
    """

    #: TokenizedExample for SFT; what ``make_batch`` takes for others (with ``input_ids``)
    train: Sequence[Any]
    validation: Sequence[Any]  # batches ``loss_sum`` takes
    cfg: Any  # finjust.recipe.TrainSection
    lr: float
    checkpoints: Path
    log: MetricsLog
    device: torch.device
    autocast_dtype: torch.dtype | None
    on_event: EventHandler
    packing: bool = True
    #: False for methods whose blocks cannot be recomputed (prefix tuning): auto leaves it off
    recompute: bool = True
    #: general-knowledge retention of the model now (1.0 = as the base); None: no guard
    retention_probe: Callable[[nn.Module], float] | None = None
    #: (examples, packing) -> a batch with ``to``, ``trained_tokens`` and ``real_tokens``; None:
    #: SFT's batches for the model trained (:func:`~finjust.objectives.sft.training_batches`)
    make_batch: Callable[[Sequence[Any], bool], Any] | None = None
    #: (model, batch) -> (summed loss, items it is summed over)
    loss_sum: Callable[[nn.Module, Any], tuple[torch.Tensor, int]] = batch_loss_sum
    #: trained weights with no pretrained value (a classifier's new head): L2-SP pulls them
    #: towards zero, as Li et al. (2018) do for new layers, not towards their random start
    new_weights: frozenset[str] = frozenset()
    #: called once before a resumed run trains past its checkpoint, from when what the run
    #: finished with before (its artifact and scorecard) no longer describes it
    on_more_steps: Callable[[], None] | None = None


def train_model(model: nn.Module, setup: LoopSetup, resume: bool = False) -> LoopState:
    """Train ``model`` in place, leaving it in eval mode; returns the final loop state (best step included)."""
    if setup.make_batch is None:
        setup = replace(setup, make_batch=training_batches(model))
    cfg = setup.cfg
    plan = plan_steps(len(setup.train), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.seed)
    params = _fp32_masters(model)
    optimizer = torch.optim.AdamW(params, lr=setup.lr, weight_decay=cfg.weight_decay, fused=_can_fuse(params))
    scheduler = get_scheduler(
        SCHEDULERS[cfg.scheduler],
        optimizer,
        num_warmup_steps=round(cfg.warmup_ratio * plan.total_steps),
        num_training_steps=plan.total_steps,
    )
    anchors = _l2sp_anchors(model, setup.new_weights) if cfg.l2sp else {}  # before a resume restores weights
    setup.on_event("start", {"total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch})
    state = _starting_state(model, setup, plan, optimizer, scheduler, resume)  # after "start": says where it resumes
    if setup.retention_probe is not None and not setup.validation:
        setup.on_event("warning", {"text": "train.forgetting_guard needs validation data, and this run has none: "
                                   "retention is not checked during training (set data.validation_fraction "
                                   "or data.validation)"})  # fmt: skip
    if resume and setup.on_more_steps is not None and state.step < plan.total_steps and not state.stopped_early:
        setup.on_more_steps()
    compiled = _compiled_forwards(model, setup, plan)
    model.train()
    with _autocast_owns_adapter_casts(model, setup.autocast_dtype), _training_forwards(model, bool(compiled)), \
            explained_build_failures(bool(compiled), setup.cfg.compile):
        blocks = _recomputing_forwards(model, compiled) if should_recompute(model, setup, plan) else compiled
        while state.step < plan.total_steps and not state.stopped_early:
            with swapped_forwards(blocks, blocks.get):
                _one_step(model, setup, plan, state, optimizer, scheduler, anchors)
            evaluated = _maybe_evaluate(model, setup, plan, state)
            if _save_due(setup.cfg, plan, state, evaluated):
                save_checkpoint(setup.checkpoints, model, optimizer, scheduler, state)
    model.eval()  # what follows (scoring, saving, export) must run without dropout
    if state.best_loss is None:
        # no validation data: the last step is the best we know; a guard that no evaluation
        # passed: the evaluation that forgot least (again where a resume trained past a best
        # step chosen this way: best_loss is set only by an evaluation within the budget)
        state.best_step = state.fallback_step or state.step
        if state.fallback_step is not None:
            setup.on_event("warning", {"text": f"no evaluation kept retention >= {cfg.forgetting_guard}; "
                                       f"using step {state.fallback_step}, the one that forgot least"})
        save_checkpoint(setup.checkpoints, model, optimizer, scheduler, state)
    return state


def _starting_state(
    model: nn.Module, setup: LoopSetup, plan: StepPlan, optimizer: Any, scheduler: Any, resume: bool
) -> LoopState:
    """A fresh state, or on resume the last checkpoint's (after tidying what a killed save left)."""
    if resume:
        recover_interrupted_saves(setup.checkpoints)
        if (folder := latest_checkpoint(setup.checkpoints)) is not None:
            state = restore_checkpoint(folder, model, optimizer, scheduler)
            if state.step > plan.total_steps:
                raise CheckpointError(
                    f"{folder} is at step {state.step}, past the {plan.total_steps} steps the recipe now plans "
                    "(train.max_steps or train.epochs lowered since the run started): a run cannot be shortened "
                    f"after the fact; plan at least {state.step} steps, or start a new run")  # fmt: skip
            setup.log.truncate_after(state.step)
            setup.on_event("resumed", {"step": state.step, "total_steps": plan.total_steps})
            _continue_past_patience(setup, state)
            return state
        setup.log.truncate_after(0)  # killed before its first checkpoint: it starts over, so does its log
        setup.on_event("warning", {"text": f"no checkpoint in {setup.checkpoints} to resume from: training starts "
                                   "over from step 0"})  # fmt: skip
    torch.manual_seed(setup.cfg.seed)
    return LoopState()


def _continue_past_patience(setup: LoopSetup, state: LoopState) -> None:
    """A run that patience stopped trains on where the resumed recipe's ``train.patience`` allows
    more evaluations without improvement (raised, or null: off); else it stays stopped, and says so."""
    if not (state.stopped_early and state.stop_reason == "patience"):
        return
    patience = setup.cfg.patience
    if patience and state.evals_since_best >= patience:
        setup.on_event("warning", {"text": f"the run stopped early at step {state.step}: {state.evals_since_best} "
                                   f"evaluations without improvement, and train.patience is {patience}; raise it "
                                   "(or set null: no early stopping) to train on"})  # fmt: skip
        return
    state.stopped_early, state.stop_reason = False, None
    setup.on_event("phase", {"text": f"training on past the early stop at step {state.step} (train.patience "
                             f"{patience or 'off'})"})  # fmt: skip


def _fp32_masters(model: nn.Module) -> list[nn.Parameter]:
    """The weights that train, in fp32 whatever the model was loaded in: AdamW's small updates
    vanish in bf16 (most of a bf16 weight of 0.02 does not move at lr 5e-5). Adapters are
    created in fp32 already; a classification head a method trains (peft's modules_to_save
    copy, BitFit's unfrozen head) comes in the base's dtype. Autocast computes with the bf16
    copies; LayerNorms, which it does not cast, get weight and bias in one dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    for param in params:
        if param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
    align_layer_norm_dtypes(model)
    return params


def _can_fuse(params: list[nn.Parameter]) -> bool:
    """AdamW's fused kernel (one pass over all weights; 33 ms a step less on the benchmark's 4.9M
    LoRA weights) runs on CPU and CUDA floating-point tensors."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def _compiled_forwards(model: nn.Module, setup: LoopSetup, plan: StepPlan) -> dict[nn.Module, Callable[..., Any]]:
    """The blocks' compiled forwards for the training steps; none where the run stays eager."""
    if not should_compile(setup.cfg.compile, setup.device, plan.total_steps):
        if eager_for_want_of_a_compiler(setup.cfg.compile, setup.device, plan.total_steps):
            setup.on_event("phase", {"text": f"not compiling this {plan.total_steps}-step run: no C++ compiler "
                                     "(g++, or $CXX) or no Python headers found, which torch.compile needs"})  # fmt: skip
        return {}
    setup.on_event("phase", {"text": "compiling the model's blocks for training (the first step takes longer)"})
    return compiled_forwards(model)


def _recomputing_forwards(
    model: nn.Module, compiled: dict[nn.Module, Callable[..., Any]]
) -> dict[nn.Module, Callable[..., Any]]:
    """Each block's step forward (compiled or its own) under a checkpoint."""
    return {block: recomputing(compiled.get(block, block.forward), model.config) for block in repeated_blocks(model)}


@contextmanager
def _training_forwards(model: nn.Module, compiled: bool) -> Iterator[None]:
    """Forwards that train leaner or faster than the classes' own (see their modules); the LoRA
    one for eager steps only, compiled ones ran slower with it; and, in both, the frozen
    head's input gradient through a transposed copy where that is faster (the loss is never
    compiled)."""
    with lean_activations(model), nullcontext() if compiled else lora_addmm_forwards(model), \
            keep_transposed_head(None if (head := plain_head(model)) is None else head.weight):
        yield


class _CastsAdapterInput(Protocol):
    """A peft adapter layer with the switch for casting its input to the adapter's dtype."""

    cast_input_dtype_enabled: bool


@contextmanager
def _autocast_owns_adapter_casts(model: nn.Module, autocast_dtype: torch.dtype | None) -> Iterator[None]:
    """Stop peft casting each adapter's input to the adapter's fp32 weights while autocast runs.

    Under autocast that cast is undone at once by the adapter's own matmul (back to bf16): two
    activation-sized copies per adapted layer, about half of a LoRA step's dtype copies here.
    Ours rather than ``peft.helpers.disable_input_dtype_casting``, which fails on adapter layers
    without the switch (peft 0.21's IA3).
    """
    # the modules hasattr found with peft's switch (mypy does not follow hasattr to the Protocol)
    layers = cast(
        "list[_CastsAdapterInput]",
        [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")] if autocast_dtype else [],
    )
    saved = [m.cast_input_dtype_enabled for m in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, value in zip(layers, saved, strict=True):
            layer.cast_input_dtype_enabled = value


def _l2sp_anchors(model: nn.Module, new_weights: frozenset[str]) -> dict[str, torch.Tensor]:
    return {
        name: torch.zeros_like(param) if name in new_weights else param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def _l2sp_backward(model: nn.Module, anchors: dict[str, torch.Tensor], strength: float) -> None:
    """Add the gradient of strength/2 * ||w - w0||^2 (L2-SP, Li et al. 2018) to each trained weight."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in anchors and param.grad is not None:
                param.grad.add_(param.detach() - anchors[name], alpha=strength)


def _one_step(
    model: nn.Module, setup: LoopSetup, plan: StepPlan, state: LoopState, optimizer: Any, scheduler: Any,
    anchors: dict[str, torch.Tensor],
) -> None:  # fmt: skip
    started = time.perf_counter()
    assert setup.make_batch is not None  # train_model fills it in before the first step
    batches = [setup.make_batch([setup.train[i] for i in micro], setup.packing) for micro in plan.steps[state.step]]
    n_trained = sum(b.trained_tokens for b in batches)
    optimizer.zero_grad(set_to_none=True)
    loss_total = 0.0
    for batch in batches:
        with autocast(setup.device, setup.autocast_dtype):
            loss_sum, _ = setup.loss_sum(model, batch.to(setup.device))
        (loss_sum / max(n_trained, 1)).backward()
        loss_total += float(loss_sum.detach())
    if anchors:
        _l2sp_backward(model, anchors, setup.cfg.l2sp)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], setup.cfg.max_grad_norm
    )
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    tokens = sum(b.real_tokens for b in batches)
    state.step += 1
    state.tokens_seen += tokens
    seconds = time.perf_counter() - started
    record = {
        "type": "train", "step": state.step, "total_steps": plan.total_steps,
        "epoch": round(plan.epoch_of(state.step), 4), "loss": loss_total / max(n_trained, 1),
        "lr": lr, "grad_norm": float(grad_norm), "tokens": tokens, "seconds": round(seconds, 4),
        "tokens_per_second": round(tokens / seconds, 1),
    }  # fmt: skip
    setup.log.append(record)
    setup.on_event("step", record)


def _eval_due(cfg: Any, plan: StepPlan, step: int) -> bool:
    if step == plan.total_steps:
        return True
    return step % cfg.eval_every == 0 if cfg.eval_every else plan.ends_epoch(step)


def _maybe_evaluate(model: nn.Module, setup: LoopSetup, plan: StepPlan, state: LoopState) -> bool:
    if not setup.validation or not _eval_due(setup.cfg, plan, state.step):
        return False
    model.eval()
    loss = mean_loss(model, setup.validation, setup.device, setup.autocast_dtype, setup.loss_sum)
    kept = setup.retention_probe(model) if setup.retention_probe else None
    model.train()
    within_budget = kept is None or kept >= setup.cfg.forgetting_guard
    # a NaN loss is no improvement: as the first best, no later loss could beat it
    improved = within_budget and math.isfinite(loss) and (
        state.best_loss is None or loss < state.best_loss - MIN_IMPROVEMENT
    )
    if improved:
        state.best_loss, state.best_step, state.evals_since_best = loss, state.step, 0
    elif within_budget or setup.cfg.forgetting_action != "best":
        # with "best", an evaluation over the forgetting budget is no evidence the loss stopped
        # improving: it neither counts towards patience nor ends the run
        state.evals_since_best += 1
    if kept is not None and (state.fallback_retention is None or kept > state.fallback_retention):
        state.fallback_step, state.fallback_retention = state.step, kept
    if state.step < plan.total_steps:  # at the last step nothing is cut short: not an early stop
        _decide_stop(setup.cfg, state, within_budget)
    record = {
        "type": "eval", "step": state.step, "epoch": round(plan.epoch_of(state.step), 4),
        "val_loss": loss, "best_loss": state.best_loss, "best_step": state.best_step,
        "improved": improved, "stopped_early": state.stopped_early, "stop_reason": state.stop_reason,
        **({"retention": kept} if kept is not None else {}),
    }  # fmt: skip
    setup.log.append(record)
    setup.on_event("eval", record)
    return True


def _decide_stop(cfg: Any, state: LoopState, within_budget: bool) -> None:
    if not within_budget and cfg.forgetting_action == "stop":
        state.stopped_early, state.stop_reason = True, "forgetting"
    elif cfg.patience and state.evals_since_best >= cfg.patience:
        state.stopped_early, state.stop_reason = True, "patience"


def _save_due(cfg: Any, plan: StepPlan, state: LoopState, evaluated: bool) -> bool:
    if state.step == plan.total_steps or state.stopped_early:
        return True
    if evaluated and state.step in (state.best_step, state.fallback_step):
        return True  # the weights a finished run scores and ships must be on disk, whatever save_every says
    return state.step % cfg.save_every == 0 if cfg.save_every else evaluated
