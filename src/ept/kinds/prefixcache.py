"""A memory cap for the causal prompt KV cache: least-recently-used eviction, recomputed on next use.

    cache = PrefixCache(compute=lambda task: prompt_kv(model, task.prompt), cap_bytes=64 << 20)
    cache.add(task)              # at load: computed now, so the first request does not pay for it
    kvs = cache.lookup(tasks)    # a pass's distinct tasks: their keys/values, or None -> run uncached
    cache.drop("sst2")           # replaced or removed

A causal task's keys/values over [BOS][P'] are computed once and reused by every pass
(`ept.kinds.causal.CausalKind`): 45 KiB per prompt position on SmolLM2-135M, so 1,000 PT tasks of
n=100 would hold 4.4 GiB. The policy is LoRAX's for adapters: keep what fits, evict the least
recently used, load it again on the next request that needs it. A recomputed cache is the same computation on the same prompt, so
eviction changes speed, never a score (tests/test_serve.py). A task whose cache alone is over the
cap is served uncached, with a warning, and never evicts the others.

`task.prefix_kv` holds the tensor while it is cached (None once evicted) and `task.cache_state`
says which: cached | evicted | over cap | uncacheable (a sliding window shorter than the prompt,
`ept.kinds.causal.prompt_kv`). Only the worker (passes) and the server's lock holders (add, remove)
touch it, never at once.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Callable

import torch

UNCACHED = ("over cap", "uncacheable")  # states served by an uncached pass


def default_cap_bytes(device: torch.device | None = None) -> int:
    """A quarter of the device's memory (a CUDA device's, else the machine's RAM): the backbone,
    activations and the rest of the process keep the other three quarters."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


class PrefixCache:
    def __init__(self, compute: Callable, cap_bytes: int | None = None, warn: Callable[[str], None] | None = None):
        self.compute, self.cap = compute, cap_bytes if cap_bytes is not None else default_cap_bytes()
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        self._lru: OrderedDict[str, object] = OrderedDict()  # name -> task holding a cache, oldest first
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru)

    def add(self, task) -> None:
        """Compute `task`'s cache now (a replaced task's old cache is dropped first)."""
        self.drop(task.name)
        self._fill(task, protect=())

    def lookup(self, tasks) -> list[torch.Tensor] | None:
        """The caches of a pass's distinct tasks, in order; a miss (evicted) is recomputed and may
        evict others, never one of this pass (so a pass whose tasks together exceed the cap holds them
all until its end, and the next miss evicts). None when one of them is served uncached."""
        if any(t.cache_state in UNCACHED for t in tasks):
            return None
        names = {t.name for t in tasks}
        for t in tasks:
            if t.prefix_kv is not None:
                self.hits += 1
                self._lru.move_to_end(t.name)
            else:
                self.misses += 1
                self._fill(t, protect=names)
        if any(t.cache_state in UNCACHED for t in tasks):  # its recomputed cache no longer fits
            return None
        return [t.prefix_kv for t in tasks]

    def drop(self, name: str) -> None:
        task = self._lru.pop(name, None)
        if task is not None:
            self.nbytes -= _size(task.prefix_kv)
            task.prefix_kv = None

    def _fill(self, task, protect) -> None:
        with torch.inference_mode():
            kv = self.compute(task)
        if kv is None:
            task.prefix_kv, task.cache_state = None, "uncacheable"
            return
        if _size(kv) > self.cap:
            task.prefix_kv, task.cache_state = None, "over cap"
            self.warn(f"task {task.name!r}: its prompt cache is {_size(kv) / 2**20:.1f} MiB, over --prefix-cache-mb "
                      f"{self.cap / 2**20:.3g}; it is served uncached (every pass with it recomputes its prompt)")
            return
        self._evict(self.cap - _size(kv), protect)
        task.prefix_kv, task.cache_state = kv, "cached"
        self._lru[task.name] = task
        self.nbytes += _size(kv)

    def _evict(self, room: int, protect) -> None:
        """Evict least recently used caches (not those in `protect`) until at most `room` bytes stay."""
        for name in [n for n in self._lru if n not in protect]:
            if self.nbytes <= room:
                return
            task = self._lru.pop(name)
            self.nbytes -= _size(task.prefix_kv)
            task.prefix_kv, task.cache_state = None, "evicted"
            self.evictions += 1


def _size(kv: torch.Tensor | None) -> int:
    return 0 if kv is None else kv.numel() * kv.element_size()
