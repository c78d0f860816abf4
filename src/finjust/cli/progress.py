"""Turns library events into progress lines on stderr (the library itself never prints)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressPrinter:
    """An event handler for :func:`finjust.train.run.run_recipe` that prints progress."""

    def __init__(self, stream: TextIO | None = None, every: int = 1) -> None:
        self.stream: TextIO | None = stream or sys.stderr
        self.every = every
        self.started = time.perf_counter()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(payload)

    def _print(self, text: str) -> None:
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.started
        try:
            print(f"[{elapsed:6.0f}s] {text}", file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # stderr piped into `head` that exited, or closed
            self.stream = None  # progress is a courtesy: the run goes on without it

    def _on_phase(self, payload: dict[str, Any]) -> None:
        self._print(payload["text"])

    def _on_warning(self, payload: dict[str, Any]) -> None:
        self._print(f"warning: {payload['text']}")

    def _on_method(self, payload: dict[str, Any]) -> None:
        share = 100 * payload["trainable"] / payload["total"]
        self._print(f"method {payload['name']}: {payload['trainable']:,} of {payload['total']:,} "
                    f"parameters train ({share:.2f}%)")  # fmt: skip

    def _on_start(self, payload: dict[str, Any]) -> None:
        self._print(f"training: {payload['total_steps']} steps ({payload['steps_per_epoch']} per epoch)")

    def _on_resumed(self, payload: dict[str, Any]) -> None:
        done = ": every step had run" if payload["step"] >= payload["total_steps"] else ""
        self._print(f"resumed from step {payload['step']} of {payload['total_steps']}{done}")

    def _on_step(self, payload: dict[str, Any]) -> None:
        step, total = payload["step"], payload["total_steps"]
        if step % self.every and step != total:
            return
        self._print(f"step {step:>4}/{total}  epoch {payload['epoch']:.2f}  loss {payload['loss']:.4f}  "
                    f"lr {payload['lr']:.2e}  {payload['tokens_per_second']:.0f} tok/s")  # fmt: skip

    def _on_eval(self, payload: dict[str, Any]) -> None:
        note = " (best)" if payload["improved"] else ""
        kept = f"  retention {payload['retention']:.3f}" if "retention" in payload else ""
        stop = {"patience": "  early stop: no improvement", "forgetting": "  stop: retention below the guard"}
        self._print(f"validation loss {payload['val_loss']:.4f}{note} at step {payload['step']}{kept}"
                    f"{stop.get(payload.get('stop_reason') or '', '')}")  # fmt: skip
