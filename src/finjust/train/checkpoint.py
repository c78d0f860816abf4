"""Atomic checkpoints of a training run and resuming from the latest one.

A checkpoint is a folder ``checkpoints/step-NNNNNN`` holding the trainable weights
(safetensors), the optimizer and scheduler state, the RNG state and the loop's state, and
the SHA-256 of each, checked when read. It is written to a temp folder and renamed, so any
``step-*`` folder present is complete and the latest one is the highest step.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from finjust import atomic
from finjust.errors import CheckpointError

_PREFIX = "step-"
#: each checkpoint file's SHA-256, written last
DIGESTS = "sha256.json"
T = TypeVar("T")


@dataclass
class LoopState:
    """What the loop must remember across an interruption."""

    step: int = 0
    tokens_seen: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    #: why training stopped before its last step: "patience" or "forgetting"
    stop_reason: str | None = None
    #: with a forgetting guard, the evaluation with the highest retention (used only when no
    #: evaluation stayed within the budget)
    fallback_step: int | None = None
    fallback_retention: float | None = None


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name, detached and contiguous (ready for safetensors)."""
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters back into ``model``; a missing or extra name is an error."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(tensors):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise CheckpointError(f"checkpoint does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


def _step_dir(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step:06d}"


def save_checkpoint(
    root: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: LoopState
) -> Path:
    """Write a checkpoint for ``state.step`` atomically and prune all but it and the best."""
    target = _step_dir(root, state.step)
    with atomic.folder(target) as tmp:
        # safetensors refuses tensors that share memory (tied embeddings): save a copy of each
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
            tmp / "optimizer.pt",
        )  # fmt: skip
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
        _record_digests(tmp)
    _prune(root, keep={state.step, state.best_step, state.fallback_step})
    return target


def _record_digests(folder: Path) -> None:
    """SHA-256 of each file, checked on reading: a damaged file (a flipped byte, a state.json edited
    by hand) is refused rather than trusted. 0.04 s for the demo's 59 MB LoRA checkpoint
    (1.4 GB/s), so ~1.2 s for full fine-tuning's 1.6 GB."""
    digests = {path.name: _digest(path) for path in sorted(folder.iterdir())}
    (folder / DIGESTS).write_text(json.dumps(digests, indent=2))


def _digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _check_digest(path: Path, advice: str | None = None) -> None:
    """Raise if ``path`` differs from what its checkpoint recorded (checkpoints written before
    digests were recorded are not checked; a missing file is left to the reader to report)."""
    record = path.parent / DIGESTS
    if not record.is_file() or not path.is_file():
        return
    try:
        recorded = json.loads(record.read_text())[path.name]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(record, exc, advice) from exc
    if _digest(path) != recorded:
        raise _damaged(path, ValueError("its SHA-256 is not the one recorded when the checkpoint was written"), advice)


def _prune(root: Path, keep: set[int | None]) -> None:
    for folder in root.glob(f"{_PREFIX}*"):
        if _step_of(folder) not in keep:
            atomic.remove_folder(folder)  # killed midway, no half-deleted step-N looks complete


def _step_of(folder: Path) -> int | None:
    suffix = folder.name[len(_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


def recover_interrupted_saves(root: Path) -> None:
    """Tidy what a run killed while saving left in ``root``: a checkpoint moved aside as
    ``.step-N.old`` comes back where no ``step-N`` replaced it, and half-written temp folders
    (a full model and optimizer each, for full fine-tuning) go (:func:`finjust.atomic.recover`)."""
    atomic.recover(root, prefix=_PREFIX)


def has_checkpoint(root: Path) -> bool:
    """Whether ``root`` holds a checkpoint to resume from: a complete one, or one a killed save
    moved aside (resuming brings it back); the temps a killed first save left do not count."""
    if latest_checkpoint(root) is not None:
        return True
    return any(atomic.moved_aside(entry) is not None for entry in root.glob(f".{_PREFIX}*"))


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = _complete_checkpoints(root)
    return max(found)[1] if found else None


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint in ``root``."""
    return [(s, f) for f in root.glob(f"{_PREFIX}*") if (s := _step_of(f)) is not None and f.is_dir()]


def _rates_from_schedule(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Set the learning rates the schedule gives at its restored step. The checkpoint's rates
    came from the schedule the run was planned with: a run resumed with more (or fewer) steps
    would take its next step at the old plan's rate (0 at the end of a cosine). Unchanged
    plans give the saved rates exactly."""
    lambdas = getattr(scheduler, "lr_lambdas", None)  # transformers' schedules are LambdaLRs
    if lambdas is None:
        return
    for group, base, rate in zip(optimizer.param_groups, scheduler.base_lrs, lambdas, strict=True):
        group["lr"] = base * rate(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def best_weights(root: Path, step: int) -> dict[str, torch.Tensor]:
    """The weights of the run's best checkpoint, which a finished run is saved and scored from.

    Raises:
        CheckpointError: it is missing or damaged; unlike a latest checkpoint, no earlier one
            stands in for it.
    """
    advice = (f"it is the run's best checkpoint (step {step}), which the run is saved and scored from and which "
              "training cannot make again: restore it from a backup, or start a new run")
    folder = _step_dir(root, step)
    if not folder.is_dir():
        raise CheckpointError(f"the checkpoint for step {step} is missing from {root}; {advice}")
    return load_weights(folder, advice)


def load_loop_state(folder: Path) -> LoopState:
    """The loop's state a checkpoint holds.

    Raises:
        CheckpointError: the file is missing, damaged, or holds a field of the wrong type.
    """
    path = folder / "state.json"
    state = _read_checked(path, lambda file: LoopState(**json.loads(file.read_text())))
    for field, expected in typing.get_type_hints(LoopState).items():
        value = getattr(state, field)
        if type(value) not in _accepted(expected) or (type(value) is int and value < 0):
            raise _damaged(path, ValueError(f"{field} is {json.dumps(value)}, expected {_described(expected)}"))
    return state


def _accepted(annotation: Any) -> tuple[type, ...]:
    """The classes a JSON value of this annotation may have (an int where a float goes; no bool for an int)."""
    types = typing.get_args(annotation) or (annotation,)
    return types + ((int,) if float in types else ())


_JSON_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _described(annotation: Any) -> str:
    return " or ".join(_JSON_NAMES[t] for t in (typing.get_args(annotation) or (annotation,)))


def load_weights(folder: Path, advice: str | None = None) -> dict[str, torch.Tensor]:
    """The trained weights a checkpoint holds.

    Raises:
        CheckpointError: the file is missing or damaged (with ``advice``, else how to resume before it).
    """
    return _read_checked(folder / "trainable.safetensors", lambda file: load_file(str(file)), advice)


def _read_checked(path: Path, read: Callable[[Path], T], advice: str | None = None) -> T:
    """``read(path)`` after checking the file's recorded digest; a missing or damaged file is a
    CheckpointError naming it (readers raise SafetensorError, UnpicklingError, EOFError, OSError...)."""
    _check_digest(path, advice)
    try:
        return read(path)
    except Exception as exc:
        raise _damaged(path, exc, advice) from exc


def _damaged(path: Path, error: Exception, advice: str | None = None) -> CheckpointError:
    """The error for a missing or damaged checkpoint file, with ``advice``, by default how to
    resume from the checkpoint before it (or from the start, where it is the first)."""
    step = _step_of(path.parent)
    earlier = step is not None and any(other < step for other, _ in _complete_checkpoints(path.parent.parent))
    to = ("resume from the checkpoint before it" if earlier or step is None
          else "start the run over from step 0 (no earlier checkpoint is kept)")  # fmt: skip
    advice = advice or f"delete its folder {path.parent} to {to}"
    return CheckpointError(f"{path} is missing or damaged ({type(error).__name__}: {error}); {advice}")


def restore_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> LoopState:
    """Put model, optimizer, scheduler and RNG back to where ``folder`` was written.

    Raises:
        CheckpointError: a file of the checkpoint is missing or damaged.
    """
    restore_trainable(model, load_weights(folder))
    # onto the CPU (a GPU run's states load on a machine without one; load_state_dict moves them to
    # their parameters' device), and tensors and plain values only: nothing in it runs code
    saved = _read_checked(folder / "optimizer.pt",
                          lambda file: torch.load(file, map_location="cpu", weights_only=True))  # fmt: skip
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _rates_from_schedule(optimizer, scheduler)
    torch.set_rng_state(saved["rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():  # GPU dropout draws from it
        _set_cuda_rng(saved["cuda_rng"])
    return load_loop_state(folder)


def _set_cuda_rng(saved: torch.Tensor | list[torch.Tensor]) -> None:
    """The training GPU's random state; checkpoints written before held one per visible GPU, of
    which those a resume still sees get theirs (fewer visible GPUs made an IndexError)."""
    if isinstance(saved, torch.Tensor):
        torch.cuda.set_rng_state(saved)
        return
    for index, state in enumerate(saved[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)
