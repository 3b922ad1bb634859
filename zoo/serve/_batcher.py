"""Dynamic batching: concurrent requests to one model gathered into shared forward passes.

Each model has one worker thread that owns it. Requests put jobs on a thread-safe queue from
the event loop; the worker takes what is waiting (up to ``max_batch`` items; when that is less
than a forward pass it waits at most ``max_wait_ms`` for more), groups it by what changes the
computation (texts or images, truncation), sorts it by length and cuts it into forward passes
of ``batch_size`` items, as ``featurize`` does with a long list, so short texts are not padded
to the longest. After each pass the worker posts its requests' rows back to the event loop and
goes straight on to the next pass: the model never waits for the event loop, and clients
answered early send their next request while the next pass runs. Each request gets exactly
its own rows; a bad item fails only its own request, with its index.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._featurize import FeaturizeReport

log = logging.getLogger("zoo.serve")

# (items, group key) -> (rows, report, token count per item or None): featurize with
# on_error="skip" over one pass's items
RunBatch = Callable[[list[Any], Hashable], "tuple[np.ndarray, FeaturizeReport, list[int] | None]"]


class QueueFull(Exception):
    """The model's queue holds as many items as it may: the request is refused, to retry after
    ``retry_after`` seconds (the time the queue takes to drain at the recent pace)."""

    def __init__(self, waiting: int, limit: int, retry_after: int) -> None:
        super().__init__(f"{waiting} inputs are waiting for this model, its limit is {limit}")
        self.waiting, self.limit, self.retry_after = waiting, limit, retry_after


class ItemError(Exception):
    """One item of a request could not be embedded: its index in the request and why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"input[{index}]: {reason}")
        self.index, self.reason = index, reason


@dataclass
class _Job:
    items: list[Any]
    key: Hashable
    future: asyncio.Future = field(repr=False)


_STOP = None  # put on the queue to end the worker


class Batcher:
    """Gathers concurrent requests for one model into shared forward passes on its own thread."""

    def __init__(self, run: RunBatch, *, max_batch: int, max_wait_ms: float, batch_size: int = 32,
                 name: str = "", max_queue: int | None = None) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.batch_size = batch_size
        self.name = name
        self.max_queue = max_queue  # most items queued or running at once; None: unbounded
        self.passes = 0  # forward passes run, for tests and logs
        self.waiting = 0  # items queued or in a pass, counted on the event loop
        self._pace = 0.0  # items a second of the last pass, for Retry-After
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """The worker is running (false before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker; answers go to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"zoo-serve-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """End the worker once the jobs already queued are done."""
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def admit(self, count: int) -> None:
        """Raise :class:`QueueFull` when ``count`` more inputs would pass ``max_queue``. Called once
        per request, before any of its jobs is queued; a request alone in the queue is always
        admitted (``max_inputs`` bounds its size), so none is refused forever."""
        if self.max_queue is not None and self.waiting and self.waiting + count > self.max_queue:
            drain = self.waiting / self._pace if self._pace > 0 else 1.0
            raise QueueFull(self.waiting, self.max_queue, max(1, math.ceil(drain)))

    async def embed(self, items: list[Any], key: Hashable) -> tuple[np.ndarray, int]:
        """Rows for ``items`` (in order), computed with whatever else is waiting, and their
        token count (0 when the model has no tokenizer to count with); raises
        :class:`ItemError` for the first bad item of this request. Jobs queued before
        :meth:`start` wait for it."""
        job = _Job(items, key, asyncio.get_running_loop().create_future())
        self.waiting += len(items)
        self._queue.put(job)
        try:
            return await job.future
        finally:
            self.waiting -= len(items)

    def _work(self) -> None:
        while (jobs := self._gather()) is not None:
            jobs = [job for job in jobs if not job.future.done()]  # a request past its deadline left
            groups: dict[Hashable, list[_Job]] = defaultdict(list)
            for job in jobs:
                groups[job.key].append(job)
            for key, members in groups.items():
                for part in _passes(members, self.batch_size):
                    self._run(part, key)

    def _gather(self) -> list[_Job] | None:
        """The next job and whatever else is waiting, up to ``max_batch`` items; while that is
        less than a forward pass, wait at most ``max_wait`` for more. None: stop."""
        first = self._queue.get()
        if first is _STOP:
            return None
        jobs, count = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            try:
                if count < self.batch_size:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # after this gathering is served
                break
            jobs.append(job)
            count += len(job.items)
        return jobs

    def _run(self, jobs: list[_Job], key: Hashable) -> None:
        """One forward pass (or a few, for a request larger than ``batch_size``); its answers go
        to the event loop."""
        items = [item for job in jobs for item in job.items]
        log.debug("%s: a forward pass of %d items from %d requests", self.name, len(items), len(jobs))
        began = time.monotonic()
        try:
            rows, report, tokens = self.run(items, key)
        except Exception as exc:  # the model failed as a whole: every request of the pass hears it
            log.exception("model %s failed on a batch of %d items", self.name, len(items))
            self._post(_fail, jobs, exc)
            return
        self.passes += 1
        self._pace = len(items) / max(time.monotonic() - began, 1e-6)
        self._post(_hand_out, jobs, rows, report, tokens)

    def _post(self, answer: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(answer, *args)
        except RuntimeError:  # the loop closed under a forced exit: nobody is waiting any more
            log.warning("%s: the event loop closed before %d answers went out", self.name, len(args[0]))


def _length(job: _Job) -> int:
    """What a forward pass pads to: a text's length (characters, a cheap stand-in for tokens).
    Images are resized and audio windowed to one shape, so their order does not matter."""
    return max((len(item) for item in job.items if isinstance(item, str)), default=0)


def _passes(jobs: list[_Job], batch_size: int) -> list[list[_Job]]:
    """``jobs`` shortest first, cut into passes of at most ``batch_size`` items; a request is
    never cut, so a larger one is a pass of its own (featurize splits it)."""
    passes: list[list[_Job]] = []
    count = 0
    for job in sorted(jobs, key=_length):
        if not passes or count + len(job.items) > batch_size:
            passes.append([])
            count = 0
        passes[-1].append(job)
        count += len(job.items)
    return passes


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():  # a client that went away cancelled its own
            job.future.set_exception(exc)


def _hand_out(jobs: list[_Job], rows: np.ndarray, report: FeaturizeReport, tokens: list[int] | None) -> None:
    """Give each job its own rows and token count; a job with a skipped item gets that item's
    error instead."""
    row_of = {index: position for position, index in enumerate(report.kept)}
    why = dict(report.skipped)
    start = 0
    for job in jobs:
        span = range(start, start + len(job.items))
        start += len(job.items)
        if job.future.done():  # the client went away
            continue
        bad = next((i for i in span if i in why), None)
        try:
            if bad is not None:
                job.future.set_exception(ItemError(bad - span.start, why[bad]))
            else:
                job.future.set_result((rows[[row_of[i] for i in span]], sum(tokens[i] for i in span) if tokens else 0))
        except Exception as exc:  # a bug here must not leave the other requests of the pass waiting
            log.exception("answering a request of %d items failed", len(job.items))
            job.future.set_exception(exc)
