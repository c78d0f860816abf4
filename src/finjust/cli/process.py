"""How the finjust process meets its terminal and its signals: output any encoding can show,
a last line into a pipe whose reader is gone, and SIGTERM/SIGHUP handled as Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


def tolerate_any_encoding() -> None:
    """Print what the terminal's encoding cannot show as escapes (``\\u2248``): under an ASCII or
    Latin-1 locale the data report's "≈" or the demo's "€" crashed a finished run's scorecard print."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def tell(text: str) -> None:
    """The last line on stderr, which may be a pipe whose reader is gone (``2>&1 | tee log``
    stopped by the same Ctrl-C): the exit status still says what happened."""
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(text, file=sys.stderr, flush=True)


def show(text: str) -> None:
    """A command's result on stdout, which may be a pipe whose reader has gone (``| head``): the
    files were written before and the exit status still says how the work went."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # what is left in stdout's buffer would fail the interpreter's flush at exit (status 120)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``docker stop``, ``timeout``, a batch scheduler, a closed terminal),
    raised where the signal lands so that a run stops as at Ctrl-C: an overwrite stopped before
    its first checkpoint puts the old run back, and the resume hint is printed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` at SIGTERM or SIGHUP while inside; the handlers before are given back."""

    def stop(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    # a signal the process ignores stays ignored: ``nohup finjust train`` must outlive its terminal
    signals = [number for number in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(number) != signal.SIG_IGN]
    saved = [signal.signal(number, stop) for number in signals]
    try:
        yield
    finally:
        for number, handler in zip(signals, saved, strict=True):
            signal.signal(number, handler)


def stopped(stop: KeyboardInterrupt) -> str:
    """What stopped the command, for its last line."""
    return f"terminated ({signal.Signals(stop.signum).name})" if isinstance(stop, Terminated) else "interrupted"


def exit_status(stop: KeyboardInterrupt) -> int:
    """The shell's status for a process a signal stopped: 128 + the signal's number."""
    return 128 + (stop.signum if isinstance(stop, Terminated) else signal.SIGINT)
