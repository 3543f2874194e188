"""Dynamic batching across callers: one worker thread drains a bounded queue of requests into
backbone passes of up to `max_batch` rows, waiting at most `max_wait_ms` for a pass to fill.

    batcher = DynamicBatcher(run_batch, max_batch=32, max_wait_ms=5, max_queue=1024)
    future = batcher.submit(rows)          # concurrent.futures.Future; QueueFull when full
    results = await asyncio.wrap_future(future)

`run_batch(list of requests' rows) -> list of (results | Exception)` runs on the worker thread
only, so an event loop that submits never runs the model. A request's rows always go into one
pass together (a request larger than `max_batch` is scored alone; `run_batch` cuts it). The queue
is bounded in ROWS, not requests: back-pressure is about work, and a caller told "429, retry
after" can resend. Hand-written (about 80 lines) because the policy -- fill-or-deadline,
row-bounded, drain on close -- is the whole point and no small library offers exactly it.
"""

from __future__ import annotations

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
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[list[list]], list], max_batch: int = 32, max_wait_ms: float = 5.0,
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
        self._thread = threading.Thread(target=self._loop, name="ept-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return self._rows

    def submit(self, rows: list) -> Future:
        with self._cond:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            if self._rows + len(rows) > self.max_queue:
                passes = (self._rows + len(rows)) / self.max_batch + 1
                raise QueueFull(self._rows, self.max_queue, max(1.0, passes * self._pass_seconds))
            job = _Job(list(rows))
            self._jobs.append(job)
            self._rows += len(rows)
            self._cond.notify()
        return job.future

    def _take(self) -> list[_Job] | None:
        """Wait for work; then fill a pass up to max_batch rows or until the first job's deadline."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None  # closing and drained
            deadline = self._jobs[0].enqueued + self.max_wait
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
            # a caller that went away (cancelled future) is skipped; a running future cannot be cancelled
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            start = time.monotonic()
            try:
                results = self.run_batch([j.rows for j in jobs])
            except BaseException as err:  # run_batch isolates requests; this is a last resort
                results = [err] * len(jobs)
            seconds = time.monotonic() - start
            self._pass_seconds = 0.8 * self._pass_seconds + 0.2 * seconds
            if self.on_batch is not None:
                self.on_batch(sum(len(j.rows) for j in jobs), seconds)
            for job, result in zip(jobs, results):
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish every queued request, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
