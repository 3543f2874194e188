"""Markdown tables for docs/results-smollm2.md from the run folders of smollm2_main.yaml.

    python experiments/cpu/smollm2_tables.py ../runs-smollm2/main [--similarity DIR/similarity.json]

Per run: validation and test accuracy of the best checkpoint, best step, mu_t after step 1, its
maximum and its final value (steps.jsonl), and the mean off-diagonal cosine between prompt tokens
(from `ept analyze similarity`, when given). Per method at the spec's lr/wd: test mean +- sample
std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ept.training.rundir import read_jsonl

NAMES = {"pt": "PT", "ptuning": "P-Tuning", "resprompt": "ResPrompt", "ept": "EPT", "ept_star": "EPT*"}


def rows(root: Path, cosine: dict) -> list[dict]:
    out = []
    for run in sorted(p for p in root.iterdir() if (p / "results.json").exists()):
        res = json.loads((run / "results.json").read_text())
        if res.get("status") != "finished" or not res.get("test"):
            continue
        cfg = json.loads((run / "config.json").read_text())
        mus = [r["mu_t"] for r in read_jsonl(run / "steps.jsonl")]
        out.append({"run": run.name, "method": res["method"], "seed": res["seed"], "lr": cfg["lr"],
                    "wd": cfg["weight_decay"], "val": res["validation"]["accuracy"], "test": res["test"]["accuracy"],
                    "best": res["best_step"], "mu1": mus[0], "mu_max": max(mus), "mu_final": mus[-1],
                    "cos": cosine.get(run.name), "params": res["trainable_params"]})
    return out


def fmt_cos(c) -> str:
    return "—" if c is None or c != c else f"{c:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--similarity", type=Path, help="similarity.json written by `ept analyze similarity`")
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--wd", type=float, default=0.01)
    args = p.parse_args()
    cosine = {}
    if args.similarity:
        cosine = {r["run"]: r["mean_offdiag_cosine"] for r in json.loads(args.similarity.read_text())["runs"]}
    runs = rows(args.root, cosine)
    print("| run | lr | wd | validation | test | best step | mu_t step 1 | max mu_t | final mu_t | mean cos |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['run']} | {r['lr']:g} | {r['wd']:g} | {r['val']:.1f} | {r['test']:.1f} | {r['best']} | "
              f"{r['mu1']:.3g} | {r['mu_max']:.3g} | {r['mu_final']:.3g} | {fmt_cos(r['cos'])} |")
    print("\n| method | trainable params | seeds | test accuracy (mean ± std) | final mu_t (median) |")
    print("| --- | --- | --- | --- | --- |")
    for method, name in NAMES.items():
        main_runs = [r for r in runs if r["method"] == method and r["lr"] == args.lr and r["wd"] == args.wd]
        if not main_runs:
            continue
        tests = [r["test"] for r in main_runs]
        std = f" ± {statistics.stdev(tests):.1f}" if len(tests) > 1 else " (one seed)"
        mu = statistics.median(r["mu_final"] for r in main_runs)
        print(f"| {name} | {main_runs[0]['params']:,} | {len(tests)} | {statistics.mean(tests):.1f}{std} | {mu:.3g} |")


if __name__ == "__main__":
    main()
