"""Benchmark 4: mixed-task inference (issue 6; targets: mixed >= 0.9x single-task, mixed >= grouped).

    python benchmarks/bench_mixed.py                 # ~2-3 minutes on 2 CPU cores

MiniLM label scoring, batches of 64 real SST-2 dev sentences (the same rows for every contender,
pre-tokenised; tokenisation is timed separately). T = 8 or 64 task prompts, alternating EPT (n=1)
and PT (n=10), each with its own label set (2-3 labels); row i belongs to task i mod T.
- single:  all 64 rows of ONE task (PT n=10) through ept's own scorer, one backbone pass;
- mixed:   ept.serving.server.MultiTaskServer.predict: all 64 rows, T tasks, one backbone pass;
- mixed sorted: the same server, rows sorted by length (input + own prompt) and cut into passes
  of 16, each pass still mixing tasks (what `MultiTaskServer.score` does by default);
- grouped: the PEFT-style alternative (PEFT cannot mix prompts in a batch: peft's `get_prompt`
  uses the active adapter): rows grouped by task, the prompt switched between sub-batches, one pass per task.
The mixed batch pads every prompt to n=10, so "single" uses n=10 as well (same token count);
"single sorted" shows what length sorting alone buys a single task.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (script_main, interleaved, machine, median, paired_ratio, table,  # noqa: E402
                     task_data, verdict)

LABEL_SETS = [("negative", "positive"), ("entailment", "not_entailment"), ("entailment", "contradiction", "neutral"),
              ("no", "yes"), ("unacceptable", "acceptable"), ("different", "paraphrase"), ("false", "true")]
ROWS = 64
CHUNK = 16  # rows per pass when sorted by length


def dev_rows(n: int) -> list[str]:
    try:
        from ept.tasks import load_task

        from _common import DATA_DIR
        return [x.fields[0] for x in load_task("sst2", DATA_DIR).test[:n]]
    except ImportError:
        return [x.fields[0] for x in task_data("sst2", n)[1]]


def run(reps: int = 3, batches: int = 3, task_counts=(8, 64)) -> list[dict]:
    from ept.backbones import PromptedModel, load_backbone
    from ept.batching import collate
    from ept.heads import make_scorer
    from ept.prompts import PTConfig
    from ept.serving.server import LabelSpec, MultiTaskServer

    backbone, tok = load_backbone("minilm")
    backbone.eval()
    e = backbone.config.hidden_size
    print(f"machine: {machine()}")
    texts = dev_rows(ROWS * batches)
    g = torch.Generator().manual_seed(0)
    results, table_rows = [], []
    for T in task_counts:
        server = MultiTaskServer(backbone, tok, max_length=64)
        scorers, prompts = [], []
        for t in range(T):
            n = 1 if t % 2 == 0 else 10
            prompt = torch.empty(n, e).uniform_(-0.5, 0.5, generator=g)
            spec = LabelSpec(f"task{t}", label_words=LABEL_SETS[t % len(LABEL_SETS)])
            server.add_task(spec.name, prompt, spec)
            wrapped = PromptedModel(backbone, tok, PTConfig(num_tokens=n)).eval()
            scorers.append(make_scorer(wrapped, spec))
            prompts.append(prompt)
        single = scorers[1]  # task1: PT n=10, 2 labels
        raw = [[{"task": f"task{i % T}", "text": x} for i, x in enumerate(texts[b * ROWS:(b + 1) * ROWS])]
               for b in range(batches)]
        feats = [server.prepare(r) for r in raw]
        plain = [[{k: v for k, v in f.items() if k != "task"} for f in fs] for fs in feats]

        def single_task(b):
            return single.predict(collate(tok, plain[b]), prompts[1])

        def grouped(b):
            out = [None] * ROWS
            for t in range(T):
                idx = [i for i, f in enumerate(feats[b]) if f["task"] == t]
                if idx:
                    preds = scorers[t].predict(collate(tok, [plain[b][i] for i in idx]), prompts[t])
                    for i, p in zip(idx, preds):
                        out[i] = p
            return out

        # same predictions before timing anything
        for b in range(batches):
            with torch.no_grad():
                assert [r["prediction"] for r in server.predict(feats[b])] == grouped(b)
        def single_sorted(b):  # the same length sorting, one task: what sorting alone buys
            order = sorted(range(ROWS), key=lambda i: -len(plain[b][i]["input_ids"]))
            return [p for s in range(0, ROWS, CHUNK) for p in single.predict(collate(tok, [plain[b][i] for i in order[s:s + CHUNK]]), prompts[1])]

        contenders = {"single": single_task, "mixed": lambda b: server.predict(feats[b]),
                      "mixed sorted": lambda b: server.predict(feats[b], CHUNK), "single sorted": single_sorted,
                      "grouped": grouped, "mixed sorted from raw rows": lambda b: server.score(raw[b], batch_size=CHUNK)}
        with torch.no_grad():
            times = interleaved(contenders, list(range(batches)), reps)
        ex = {k: ROWS / median(v) for k, v in times.items()}
        vs_single = paired_ratio(times["single"], times["mixed"])  # mixed throughput / single throughput
        vs_grouped = paired_ratio(times["grouped"], times["mixed"])
        sorted_vs_grouped = paired_ratio(times["grouped"], times["mixed sorted"])
        results.append({"tasks": T, **{f"{k}_ex_s": v for k, v in ex.items()}, "mixed_vs_single": vs_single,
                        "mixed_vs_grouped": vs_grouped, "mixed_sorted_vs_grouped": sorted_vs_grouped})
        table_rows.append([T, ex["single"], ex["mixed"], vs_single, verdict(vs_single >= 0.9), ex["grouped"], vs_grouped,
                           ex["mixed sorted"], sorted_vs_grouped, verdict(max(vs_grouped, sorted_vs_grouped) >= 1.0),
                           ex["single sorted"], ex["mixed sorted from raw rows"]])
    print(f"\nbatch {ROWS} SST-2 dev rows, {batches} batches x {reps} reps; predictions of mixed == grouped checked\n")
    table(["tasks in batch", "single ex/s (1 pass)", "mixed ex/s (1 pass)", "mixed/single", "target >= 0.9",
           "grouped by task ex/s", "mixed/grouped", f"mixed sorted ex/s ({CHUNK}-row passes)", "mixed sorted/grouped",
           "target >= 1.0", f"single sorted ex/s ({CHUNK}-row passes)", "mixed sorted incl. tokenisation ex/s"], table_rows)
    print()
    return results


def main(argv=None) -> int:
    return script_main(__doc__, run, argv, reps=3, batches=3, tasks=[8, 64], task_type=int)


if __name__ == "__main__":
    raise SystemExit(main())
