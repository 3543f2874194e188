"""Dynamic batching across callers: one worker thread drains a bounded queue of requests into
backbone passes of up to `max_batch` rows, waiting at most `max_wait_ms` for a pass to fill.

    batcher = DynamicBatcher(run_batch, max_batch=32, max_wait_ms=5, max_queue=1024)
    future = batcher.submit(rows)          # concurrent.futures.Future; QueueFull when full
    results = await batcher.submit_async(rows)   # on an event loop: an asyncio.Future

`submit_async` exists for the HTTP server's hot path: the worker settles all of a pass's asyncio
futures with ONE `call_soon_threadsafe` per loop (one wake-up of the loop per pass, not one per
request as `asyncio.wrap_future` does).

When a pass starts: when it is full, or `max_wait_ms` after its first row arrived or after the
worker became free, whichever is later. The second clause matters under load: rows that queued
during a pass would otherwise start the next pass at once, without the callers that pass just
answered, and a fixed number of back-to-back callers splits into two groups that alternate (each
request then waits for the other group's pass and its own). Waiting up to `max_wait_ms` lets the
answered callers' next rows join, so passes stay full; no row waits longer than the pass before
it, `max_wait_ms` and its own pass.

`run_batch(list of requests' rows, their tags) -> list of (results | Exception)` runs on the worker thread
only, so an event loop that submits never runs the model. A request's rows always go into one
pass together (a request larger than `max_batch` is scored alone; `run_batch` cuts it). The queue
is bounded in ROWS, not requests: back-pressure is about work, and a caller told "429, retry
after" can resend. Hand-written (about 120 lines) because the policy -- fill-or-deadline,
row-bounded, drain on close -- is the whole point and no small library offers exactly it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable


class QueueFull(Exception):
    """The queue holds `max_queue` rows already; retry after about `retry_after` seconds."""

    def __init__(self, queued: int, max_queue: int, retry_after: float):
        super().__init__(f"queue full: {queued} rows waiting, --max-queue {max_queue}; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    rows: list
    future: Future | asyncio.Future = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None  # set: `future` is an asyncio future of this loop
    tag: object = None  # the caller's (a request id), handed to run_batch for its log lines
    enqueued: float = field(default_factory=time.monotonic)

    def live(self) -> bool:
        """False when the caller went away (cancelled); a concurrent future is marked running."""
        return not self.future.cancelled() if self.loop else self.future.set_running_or_notify_cancel()


def _settle(pairs: list) -> None:
    """On the event loop: resolve a pass's asyncio futures (a cancelled one is left alone)."""
    for future, result in pairs:
        if future.cancelled():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[list[list], list], list], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch={max_batch}, max_queue={max_queue} must be >= 1 and max_wait_ms={max_wait_ms} >= 0")
        self.run_batch, self.on_batch = run_batch, on_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self._jobs: deque[_Job] = deque()
        self._rows = 0  # rows queued (not yet taken by the worker)
        self._cond = threading.Condition()
        self._closing = False
        self._pass_seconds = 0.05  # running mean of one pass, for Retry-After
        self._free_since = 0.0  # when the last pass ended (monotonic)
        self._thread = threading.Thread(target=self._loop, name="ept-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return self._rows

    def submit(self, rows: list, tag=None) -> Future:
        return self._enqueue(_Job(list(rows), tag=tag)).future

    def submit_async(self, rows: list, tag=None) -> asyncio.Future:
        """`submit` for a caller on a running event loop: await the returned future."""
        loop = asyncio.get_running_loop()
        return self._enqueue(_Job(rows, loop.create_future(), loop, tag)).future

    def _enqueue(self, job: _Job) -> _Job:
        with self._cond:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            if self._rows + len(job.rows) > self.max_queue:
                passes = (self._rows + len(job.rows)) / self.max_batch + 1
                raise QueueFull(self._rows, self.max_queue, max(1.0, passes * self._pass_seconds))
            self._jobs.append(job)
            self._rows += len(job.rows)
            if self._rows >= self.max_batch or len(self._jobs) == 1:
                self._cond.notify()  # the worker waits for a full pass or for a first job: else let it sleep
        return job

    def _take(self) -> list[_Job] | None:
        """Wait for work; then fill a pass up to max_batch rows or until its deadline (module docstring)."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None  # closing and drained
            deadline = max(self._jobs[0].enqueued, self._free_since) + self.max_wait  # module docstring
            while self._rows < self.max_batch and not self._closing and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            jobs, rows = [self._jobs.popleft()], 0
            rows = len(jobs[0].rows)
            while self._jobs and rows + len(self._jobs[0].rows) <= self.max_batch:
                rows += len(self._jobs[0].rows)
                jobs.append(self._jobs.popleft())
            self._rows -= rows
            return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [j for j in jobs if j.live()]  # a caller that went away is skipped
            if not jobs:
                continue
            start = time.monotonic()
            try:
                results = self.run_batch([j.rows for j in jobs], [j.tag for j in jobs])
            except BaseException as err:  # run_batch isolates requests; this is a last resort
                results = [err] * len(jobs)
            self._free_since = end = time.monotonic()
            self._pass_seconds = 0.8 * self._pass_seconds + 0.2 * (end - start)
            if self.on_batch is not None:
                self.on_batch(sum(len(j.rows) for j in jobs), end - start)
            self._deliver(jobs, results)

    @staticmethod
    def _deliver(jobs: list[_Job], results: list) -> None:
        by_loop: dict = {}
        for job, result in zip(jobs, results):
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result))
            elif isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, pairs)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish every queued request, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
