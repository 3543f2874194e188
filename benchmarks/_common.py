"""Shared by the benchmarks: real task batches, the training step, interleaved timing, tables.

Benchmarks are scripts, not tests: they never run in CI. Every timing compares contenders
measured side by side in the same process, interleaved (each repetition runs every contender once,
in a rotating order) so that load from other processes hits all of them alike; we report medians
and the median of per-repetition ratios.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EPT_DATA_DIR") or REPO.parent / "shared" / "data")
BATCH = 16
MAX_LENGTH = {"sst2": 64, "rte": 128}  # CPU-scale lengths (the paper's are 256; Appendix B.2)
LABELS = {"sst2": ("negative", "positive"), "rte": ("entailment", "not_entailment")}


# ----------------------------------------------------------------------------- machine
def set_threads(n: int | None) -> None:
    """Pin torch's intra-op threads. Default 1: on 2 cores shared with other jobs, 2 OpenMP
    threads spin-wait on each other and a step runs ~4x slower (and far noisier) than with 1."""
    if n:
        torch.set_num_threads(n)


def script_main(doc: str, run, argv=None, reps: int = 4, batches: int = 4, tasks=("sst2", "rte"), task_type=str) -> int:
    """The shared command line of the interleaved benchmarks: --reps, --batches, --tasks, --threads."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--batches", type=int, default=batches)
    p.add_argument("--tasks", type=task_type, nargs="+", default=list(tasks))
    add_common_args(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    run(args.reps, args.batches, args.tasks)
    return 0


def add_common_args(p) -> None:
    p.add_argument("--threads", type=int, default=int(os.environ.get("EPT_BENCH_THREADS", "1")),
                   help="torch intra-op threads (default 1, or $EPT_BENCH_THREADS; 0 = torch's default)")


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import peft
    import transformers

    load = " | load avg %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{cpu} | nproc {os.cpu_count()}{load} | torch {torch.__version__} ({torch.get_num_threads()} threads) | "
            f"transformers {transformers.__version__} | peft {peft.__version__} | python {platform.python_version()} | "
            f"timing clock: {'process CPU time' if torch.get_num_threads() == 1 else 'wall-clock'}")


# ----------------------------------------------------------------------------- data
def task_data(task: str, n: int):
    """(spec, first n training examples): ept.tasks when importable, else the tsv via csv."""
    try:
        from ept.tasks import load_task
    except ImportError:
        load_task = None
    if load_task is not None:
        data = load_task(task, DATA_DIR)
        return data.spec, data.train[:n]
    # fallback: GLUE tsv read directly
    rows = list(csv.DictReader(open(DATA_DIR / task / "train.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    words = LABELS[task]
    out = []
    for r in rows[:n]:
        if task == "sst2":
            fields, label = (r["sentence"],), int(r["label"])
        else:
            fields, label = (r["sentence1"], r["sentence2"]), words.index(r["label"])
        out.append(SimpleNamespace(source=f"{task} " + " ".join(fields), target=words[label], label=label, fields=fields))
    spec = SimpleNamespace(name=task, kind="classification", label_words=words, max_length=MAX_LENGTH[task])
    return spec, out


def encoded_batches(tokenizer, task: str, kind: str, num_batches: int, batch_size: int = BATCH):
    """(spec, list of feature lists): real consecutive training rows, tokenised once (ept.batching)."""
    from ept.kinds import encode

    spec, examples = task_data(task, num_batches * batch_size)
    enc = encode(tokenizer, examples, kind, MAX_LENGTH.get(task, 128))
    feats = enc.features
    return spec, [feats[i:i + batch_size] for i in range(0, len(feats), batch_size)]


# ----------------------------------------------------------------------------- the training step
def ept_train_step_fn():
    """ept's whole step on pre-tokenised rows: collate -> `ept.training.recipe.train_step` (scorer.loss ->
    backward -> AdamW step -> zero_grad -> mu_t, Eq. 4). The benchmark times what training runs."""
    from ept.batching import collate
    from ept.training.recipe import train_step

    def ept_train_step(model, scorer, opt, tokenizer, features):
        return train_step(model, scorer, opt, collate(tokenizer, features))

    return ept_train_step


def make_ept(backbone, tokenizer, spec, method: str, seed: int = 0):
    from ept.backbones import PromptedModel
    from ept.heads import make_scorer
    from ept.prompts import method_config

    torch.manual_seed(seed)
    model = PromptedModel(backbone, tokenizer, method_config(method))
    model.train()
    scorer = make_scorer(model, spec)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.3, weight_decay=0.01)
    return model, scorer, opt


def label_embeddings(backbone, tokenizer, words) -> torch.Tensor:
    """(C, e) frozen label-text embeddings, mean-pooled and normalised (as ept.heads does)."""
    tok = tokenizer(list(words), padding=True, return_tensors="pt")
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(**tok).last_hidden_state
    backbone.train(was)
    m = tok["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((out * m).sum(1) / m.sum(1), dim=-1)


def pooled_ce(hidden, input_mask, labels, label_emb, n: int) -> torch.Tensor:
    """The label-scoring loss on hidden states (B, n+L, e): mean-pool the input positions."""
    h = hidden[:, n:]
    m = input_mask.unsqueeze(-1).to(h.dtype)
    pooled = torch.nn.functional.normalize(((h * m).sum(1) / m.sum(1).clamp(min=1)).float(), dim=-1)
    return torch.nn.functional.cross_entropy(pooled @ label_emb.T / 0.05, labels)


def bare_step(backbone, prompt, label_emb, batch) -> None:
    """The frozen-model limit: embeddings + a fixed prompt tensor (n, e), frozen forward+backward,
    the same loss; no prompt network, no optimizer, no per-step Python beyond the model call."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B, n = ids.shape[0], prompt.shape[0]
    embeds = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), backbone.get_input_embeddings()(ids)], 1)
    full = torch.cat([mask.new_ones(B, n), mask], 1)
    tti = torch.cat([ids.new_zeros(B, n), batch["token_type_ids"]], 1) if "token_type_ids" in batch else None
    hidden = backbone(inputs_embeds=embeds, attention_mask=full, token_type_ids=tti).last_hidden_state
    pooled_ce(hidden, mask, batch["labels"], label_emb, n).backward()
    prompt.grad = None


# ----------------------------------------------------------------------------- timing
class Timings(dict):
    """name -> seconds per call on the primary clock; `.wall` holds wall-clock seconds.

    The primary clock is this process's CPU time when torch runs 1 thread: on cores shared with
    other jobs it leaves out the time the OS gives to them, which wall-clock time cannot. With
    more threads CPU time sums over threads, so the primary clock is wall-clock time.
    """

    def __init__(self, names, clock: str):
        super().__init__({n: [] for n in names})
        self.wall = {n: [] for n in names}
        self.clock = clock


def interleaved(contenders: dict, inputs: list, reps: int, warmup: int = 1) -> Timings:
    """Seconds per call of each contender on each input, repeated `reps` times.

    contenders: name -> fn(input). Each (rep, input) runs every contender once, starting with a
    different one each time. Returns name -> list of seconds, aligned across contenders.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name](inputs[0])
    cpu = torch.get_num_threads() == 1
    times = Timings(names, "CPU time" if cpu else "wall-clock")
    k = 0
    for _ in range(reps):
        for x in inputs:
            order = names[k % len(names):] + names[:k % len(names)]
            k += 1
            for name in order:
                w, c = time.perf_counter(), time.process_time()
                contenders[name](x)
                c, w = time.process_time() - c, time.perf_counter() - w
                times[name].append(c if cpu else w)
                times.wall[name].append(w)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over aligned runs of a/b: robust to batches of different lengths and to drift."""
    return statistics.median(x / y for x, y in zip(a, b))


def table(headers: list[str], rows: list[list], out=sys.stdout) -> None:
    print("| " + " | ".join(headers) + " |", file=out)
    print("|" + "|".join(" --- " for _ in headers) + "|", file=out)
    for r in rows:
        print("| " + " | ".join(_fmt(x) for x in r) + " |", file=out)
    out.flush()


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
