"""Benchmark 5: peak memory of one training step, ept vs PEFT vs the bare loop (target: ept within 5%).

    python benchmarks/bench_memory.py                # ~2-3 minutes on 2 CPU cores

Each contender runs in a FRESH subprocess (MiniLM, one real SST-2 / RTE batch of 16, train mode),
takes two warm-up steps, then is measured two ways:
1. peak RSS growth during 3 steps: VmHWM reset through /proc/self/clear_refs, minus the RSS just
   before; glibc's mmap threshold is pinned at 64 KiB (MALLOC_MMAP_THRESHOLD_) so freed tensors go
   back to the OS and RSS follows live memory instead of malloc's cache (Linux only);
2. peak of torch's own CPU allocations during 1 step from the torch profiler's memory timeline
   (profile_memory + record_shapes + with_stack; categories: parameters, activations, gradients,
   optimizer state, ...), reported as the peak above the step's starting level.
Contenders: bare n=10 and n=1 (fixed prompt tensor, frozen forward+backward, no optimizer), ept
pt / ptuning (n=10) and ept (n=1) with their whole step (AdamW included), PEFT pt / ptuning.
Also shown, not part of the target: the trainable parameters and AdamW moments that live between
steps, and the whole process's peak RSS (model weights, libraries: PEFT imports more).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, machine, set_threads, table, verdict  # noqa: E402

CONTENDERS = {"bare n=10": None, "bare n=1": None, "ept pt": "bare n=10", "ept ptuning": "bare n=10",
              "ept ept": "bare n=1", "peft pt": "bare n=10", "peft ptuning": "bare n=10"}
TARGET = 1.05


def _rss() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def _profiled_peak(step) -> int:
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # torch-internal; may move

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]


def child(contender: str, task: str) -> dict:
    from _common import (bare_step, encoded_batches, ept_train_step_fn, label_embeddings, make_ept)
    from ept.backbones import load_backbone
    from ept.batching import collate

    backbone, tok = load_backbone("minilm")
    backbone.requires_grad_(False)  # frozen for every contender (from_pretrained leaves grads on)
    spec, feats = encoded_batches(tok, task, "encoder", 4)
    feats = max(feats, key=lambda f: max(len(x["input_ids"]) for x in f))  # the widest of 4 real batches
    label_emb = label_embeddings(backbone, tok, spec.label_words)
    kind, _, method = contender.partition(" ")
    if kind == "bare":
        backbone.train()
        n = int(method.split("=")[1])
        prompt = torch.empty(n, backbone.config.hidden_size).uniform_(-0.5, 0.5).requires_grad_()
        batch = collate(tok, feats)

        state = [prompt]

        def step():
            bare_step(backbone, prompt, label_emb, batch)
    elif kind == "ept":
        model, scorer, opt = make_ept(backbone, tok, spec, method)
        train_step = ept_train_step_fn()
        state = [p for p in model.parameters() if p.requires_grad]

        def step():
            train_step(model, scorer, opt, tok, feats)
    else:
        import warnings

        from bench_vs_peft import make_peft, peft_train_step
        warnings.filterwarnings("ignore")
        pmodel, popt = make_peft(backbone, method)
        del backbone  # PEFT trains its own copy; drop ours so both hold one model
        state = [p for p in pmodel.parameters() if p.requires_grad]

        def step():
            peft_train_step(pmodel, popt, tok, feats, label_emb)
    for _ in range(2):
        step()
    import gc

    gc.collect()
    before = _rss()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS
    for _ in range(3):
        step()
    rss_total = _hwm()
    # trainable floats that persist between steps: parameters + AdamW's two moments (fp32)
    persistent = sum(p.numel() for p in state) * 4 * (1 if kind == "bare" else 3)
    return {"contender": contender, "task": task, "rss_peak": rss_total - before, "rss_total": rss_total,
            "persistent": persistent, "torch_peak": _profiled_peak(step),
            "width": max(len(x["input_ids"]) for x in feats)}


def run(tasks=("sst2", "rte"), threads: int = 1) -> list[dict]:
    print(f"machine: {machine()}")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "EPT_BENCH_THREADS": str(threads)}
    out = []
    for task in tasks:
        res = {}
        for c in CONTENDERS:
            proc = subprocess.run([sys.executable, __file__, "--child", c, task, "--threads", str(threads)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"{c} on {task} failed:\n{proc.stderr[-2000:]}")
            res[c] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows = []
        for c, base in CONTENDERS.items():
            r = res[c]
            ratio_rss = r["rss_peak"] / res[base]["rss_peak"] if base else 1.0
            ratio_torch = r["torch_peak"] / res[base]["torch_peak"] if base else 1.0
            ok = ratio_torch <= TARGET and ratio_rss <= TARGET
            out.append({**r, "baseline": base, "ratio_rss": ratio_rss, "ratio_torch": ratio_torch, "ok": ok})
            rows.append([task, c, base or "-", r["rss_peak"] / 2**20, ratio_rss, r["torch_peak"] / 2**20, ratio_torch,
                         verdict(ok) if base else "-", r["persistent"] / 2**20, r["rss_total"] / 2**20])
        print(f"\n{task}: widest of 4 real batches of 16 = {res['bare n=1']['width']} tokens (+ n prompt)")
        table(["task", "contender", "baseline", "step: peak RSS growth MiB", "ratio", "step: torch alloc peak MiB",
               "ratio", f"target <= {TARGET}", "trainable + AdamW state MiB", "process peak RSS MiB"], rows)
    print()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    p.add_argument("--child", nargs=2, metavar=("CONTENDER", "TASK"), help=argparse.SUPPRESS)
    add_common_args(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    run(args.tasks, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
