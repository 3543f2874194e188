"""Markdown table for docs/results-minilm.md from the run folders of pairs_main.yaml.

    python experiments/cpu/pairs_table.py ../runs-cpu/pairs

Per (task, method): test main metric of the best validation checkpoint, mean +- sample std over
the finished seeds, the seeds' values, how many runs kept the untrained prompt (best step 0: no
trained step beat it on validation), trainable parameters and the median final mu_t. `ept report`
gives the paper-layout table of the same runs; this one adds what the pair-task verdict needs.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from ept.training.rundir import find_runs

NAMES = {"pt": "PT", "ptuning": "P-Tuning", "resprompt": "ResPrompt", "ept": "EPT", "ept_star": "EPT*"}


def cells(root: Path) -> dict:
    out = defaultdict(list)
    for run in find_runs(root, strict=False):
        res = run.read_results()
        if not res or res.get("status") != "finished":
            continue
        metric = res["main_metric"]
        out[(res["task"], res["method"])].append({"seed": res["seed"], "test": res["test"][metric],
                                                  "best": res["best_step"], "params": res["trainable_params"],
                                                  "mu": res["final_mu_t"], "metric": metric})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    args = p.parse_args()
    found = cells(args.root)
    print("| task | method | trainable params | test (mean ± std) | per seed | kept the untrained prompt | final μ_t (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task in sorted({t for t, _ in found}):
        for method, name in NAMES.items():
            runs = sorted(found.get((task, method), []), key=lambda r: r["seed"])
            if not runs:
                continue
            tests = [r["test"] for r in runs]
            spread = f" ± {statistics.stdev(tests):.1f}" if len(tests) > 1 else ""
            print(f"| {task} ({runs[0]['metric']}) | {name} | {runs[0]['params']:,} | {statistics.mean(tests):.1f}{spread} "
                  f"| {', '.join(f'{t:.1f}' for t in tests)} | {sum(r['best'] == 0 for r in runs)} of {len(runs)} "
                  f"| {statistics.median(r['mu'] for r in runs):.3g} |")


if __name__ == "__main__":
    main()
