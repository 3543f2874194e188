"""ept.serving.batcher.DynamicBatcher on its own: asyncio callers get their own results from shared passes,
tags reach run_batch, a cancelled caller is skipped, a failing request fails alone, close drains."""

from __future__ import annotations

import asyncio

import pytest

from ept.serving.batcher import DynamicBatcher, QueueFull


def test_async_callers_share_passes_and_get_their_own_results():
    passes = []

    def run_batch(requests, tags):
        passes.append((requests, tags))
        return [ValueError(f"bad {tag}") if rows == ["bad"] else [r * 10 for r in rows] for rows, tag in zip(requests, tags)]

    # 8 rows fill a pass at once; the 10 s window only ends by close(): nothing here depends on timing
    batcher = DynamicBatcher(run_batch, max_batch=8, max_wait_ms=10_000, max_queue=20)

    async def main():
        futures = [batcher.submit_async([i, i + 1], tag=f"req-{i}") for i in range(3)]
        gone = batcher.submit_async([99], tag="gone")
        gone.cancel()  # the caller went away before its pass: skipped, the others unharmed
        bad = batcher.submit_async(["bad"], tag="req-bad")
        with pytest.raises(QueueFull):
            batcher.submit_async(list(range(15)))
        results = await asyncio.gather(*futures)
        with pytest.raises(ValueError, match="bad req-bad"):
            await bad
        return results

    assert asyncio.run(main()) == [[0, 10], [10, 20], [20, 30]]
    seen = [tag for _, tags in passes for tag in tags]
    assert "gone" not in seen and sorted(seen) == ["req-0", "req-1", "req-2", "req-bad"]
    assert len(passes) == 1  # 8 rows of 5 callers: one full pass
    threaded = batcher.submit([5])  # the thread-safe form, for callers without a loop
    batcher.close(timeout=10)  # drains: the queued request is answered before the worker stops
    assert threaded.result(timeout=10) == [50]
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit([1])
