"""One worker thread owns the model; requests wait in a bounded queue in front of it.

The model is never run by two threads at once, so a request never fails because another is
running: it waits. When the worker takes a greedy non-streaming request it also takes the
compatible ones already waiting (up to ``max_batch``) and answers them with one generate
call; a streaming or sampled request runs alone. Results go back to the asyncio loop that
submitted the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from finjust.errors import ServeError
from finjust.serve.decode import Row, Sampling, generate_rows
from finjust.serve.source import ServedModel

log = logging.getLogger("finjust.serve")

#: event kinds a job receives: a piece of streamed text, the finished row, or the error that ended it
TEXT, DONE, FAILED = "text", "done", "failed"


class _Waiting(enum.Enum):
    """What :meth:`Engine._take_waiting` returns when no job waits (an enum member: a sentinel mypy can narrow)."""

    NOTHING = enum.auto()


@dataclass
class Job:
    """A request waiting for, or being answered by, the worker."""

    prompt: list[int]
    sampling: Sampling
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def batchable(self) -> bool:
        return self.sampling.greedy and not self.stream

    def post(self, kind: str, payload: Any) -> None:
        """Hand an event to the request's loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            self.cancelled.set()

    def row(self) -> Row:
        on_text = (lambda text: self.post(TEXT, text)) if self.stream else None
        return Row(self.prompt, self.sampling, on_text, self.cancelled.is_set)


class Engine:
    """The worker thread, its queue and its batching."""

    def __init__(self, served: ServedModel, max_batch: int, max_queue: int) -> None:
        self.served = served
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._held: deque[Job | None] = deque()  # taken while gathering a batch, but not compatible with it
        self._stopping = threading.Event()
        self._running: list[Job] = []  # the batch the worker is answering
        self._admitted = 0  # requests read and tokenized before they are submitted: waiting too
        self._admitting = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="finjust-serve-worker", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request as waiting from before its body is read and tokenized until it is
        submitted (or fails): a full server refuses it before that work, not after.

        Raises:
            ServeError: the server is full or shutting down.
        """
        with self._admitting:
            if self._stopping.is_set() or not self._thread.is_alive():
                raise _shutting_down()
            if self._waiting() + self._admitted >= self.max_queue:
                raise self._busy()
            self._admitted += 1
        try:
            yield
        finally:
            with self._admitting:
                self._admitted -= 1

    def submit(self, job: Job) -> None:
        """Queue ``job``; a full queue refuses it at once (503) instead of letting clients pile up.

        Raises:
            ServeError: the queue is full or the server is shutting down.
        """
        if self._stopping.is_set() or not self._thread.is_alive():
            raise _shutting_down()
        try:
            if self._waiting() >= self.max_queue:
                raise queue.Full
            self._queue.put_nowait(job)
        except queue.Full:
            raise self._busy() from None

    def _waiting(self) -> int:
        """Jobs submitted and not yet answered: the queue's and those held back from a batch
        (gathering a batch moves the jobs it cannot take out of the queue)."""
        return self._queue.qsize() + len(self._held)

    def _busy(self) -> ServeError:
        return ServeError(f"the server is busy: {self.max_queue} requests are already waiting; retry shortly "
                          "(the operator can raise --max-queue)", status=503, code="server_busy",
                          kind="server_error")  # fmt: skip

    def stop_accepting(self) -> None:
        """Refuse new requests and answer the waiting ones 503; the batch being answered goes on."""
        self._stopping.set()
        for job in self._drain():
            job.post(FAILED, _shutting_down())

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker: the batch it is answering stops at its next token, and requests still
        waiting get a 503 (a shutdown should not wait for every queued generation to run out)."""
        self.stop_accepting()
        for job in list(self._running):
            job.cancelled.set()
        try:
            self._queue.put_nowait(None)  # wakes a worker waiting for work
        except queue.Full:
            pass  # a busy worker sees _stopping when its batch ends
        # the worker must be out of torch before the interpreter exits, or the process aborts
        self._thread.join(timeout)

    def _drain(self) -> list[Job]:
        """Every job still waiting, taken off the queue."""
        waiting: list[Job] = []
        while (job := self._take_waiting()) is not _Waiting.NOTHING:
            if isinstance(job, Job):
                waiting.append(job)
        return waiting

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:  # not "if self._held": a shutdown may drain it between the test and the pop
                first = self._held.popleft()
            except IndexError:
                first = self._queue.get()
            if first is None:
                break
            batch = self._gather(first)
            if batch:
                self._answer(batch)
        # what a batch being gathered put back after a shutdown drained the rest
        for job in self._drain():
            job.post(FAILED, _shutting_down())

    def _gather(self, first: Job) -> list[Job]:
        """``first`` and, when it batches, the compatible jobs already waiting; cancelled jobs are dropped."""
        batch = [] if first.cancelled.is_set() else [first]
        if not first.batchable:
            return batch
        skipped: list[Job | None] = []
        while len(batch) < self.max_batch:
            job = self._take_waiting()
            if job is _Waiting.NOTHING:
                break
            if job is None or not self._compatible(batch or [first], job):
                skipped.append(job)  # answered after this batch, in arrival order (a shutdown marker too)
                if job is None:
                    break
            elif not job.cancelled.is_set():
                batch.append(job)
        self._held.extendleft(reversed(skipped))
        return batch

    def _take_waiting(self) -> Job | None | Literal[_Waiting.NOTHING]:
        if self._held:
            return self._held.popleft()
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return _Waiting.NOTHING

    def _compatible(self, batch: list[Job], job: Job) -> bool:
        """``job`` can join ``batch``: it batches, its prompt length suits the model, and the batch
        still fits the context (every row is padded to the longest prompt and runs for the
        largest max_tokens; positions past the context fail on learned position embeddings)."""
        same_length = len(job.prompt) == len(batch[0].prompt)
        together = [*batch, job]
        width = max(len(j.prompt) for j in together) + max(j.sampling.max_tokens for j in together)
        fits = width <= self.served.context
        return job.batchable and fits and (same_length or not self.served.equal_lengths)

    def _answer(self, batch: list[Job]) -> None:
        rows = [job.row() for job in batch]
        self._running = batch
        try:
            generate_rows(self.served, rows)
        except Exception:  # a failure answers these requests; the worker keeps serving the rest
            log.exception("generation failed for %d request(s)", len(batch))
            failed = ServeError("generation failed; the server's log has the details", status=500,
                                code="generation_failed", kind="server_error")  # fmt: skip
            for job in batch:
                job.post(FAILED, failed)
            return
        finally:
            self._running = []
        for job, row in zip(batch, rows, strict=True):
            if job.cancelled.is_set() and self._stopping.is_set():  # cut short by close(): not an answer
                job.post(FAILED, _shutting_down())
            else:
                job.post(DONE, row)


def _shutting_down() -> ServeError:
    return ServeError("the server is shutting down", status=503, code="server_shutting_down", kind="server_error")
