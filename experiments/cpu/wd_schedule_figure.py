"""Table and figure for the weight-decay x lr-schedule grid (experiments/cpu/wd_schedule.yaml).

    python experiments/cpu/wd_schedule_figure.py ../runs-cpu/wd_schedule --out docs/results-minilm/wd_schedule

Per run: validation/test accuracy of the best checkpoint, mu_t (norm of the reparameterized prompt
P', Eq. 4) at its maximum and at the end, and the number of "saw-tooth" drops: steps where mu_t
fell below half of its running maximum since the previous drop (a collapse of >= 2x). Writes
wd_schedule.csv (one row per run), wd_schedule.png (mu_t per step, one panel per cell of the grid)
and prints the markdown table. `ept analyze norms` averages runs of one method, which would merge
the four grid cells, hence this small script.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from ept.training.rundir import find_runs


def saw_drops(mus: list[float], ratio: float = 0.5) -> int:
    """Count collapses: mu_t falling below `ratio` x the running peak, the peak resetting after each."""
    drops, peak = 0, 0.0
    for m in mus:
        if m < ratio * peak:
            drops, peak = drops + 1, m
        peak = max(peak, m)
    return drops


def grid_rows(root: Path) -> list[dict]:
    rows = []
    for run in find_runs(root, strict=False):
        res = run.read_results()
        if not res or res.get("status") != "finished":
            continue
        cfg = run.read_config(fill_defaults=True)
        mus = [s["mu_t"] for s in run.steps()]
        rows.append({"run": run.path.name, "weight_decay": cfg["weight_decay"],
                     "lr_scheduler": cfg["lr_scheduler"], "seed": cfg["seed"],
                     "validation": res["validation"]["accuracy"], "test": res["test"]["accuracy"],
                     "best_step": res["best_step"], "mu_max": max(mus), "mu_final": mus[-1],
                     "drops": saw_drops(mus), "mu_t": mus})
    return sorted(rows, key=lambda r: (r["weight_decay"], r["lr_scheduler"], r["seed"]))


def draw(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["weight_decay"], r["lr_scheduler"]) for r in rows})
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3), sharey=True)
    for ax, (wd, sched) in zip(axes, cells):
        for r in rows:
            if (r["weight_decay"], r["lr_scheduler"]) == (wd, sched):
                ax.plot(range(1, len(r["mu_t"]) + 1), r["mu_t"], label=f"seed {r['seed']}")
        ax.set(title=f"wd {wd:g}, {sched} lr", xlabel="step", yscale="log")
    axes[0].set_ylabel(r"$\mu_t$ (norm of $P'$)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = grid_rows(args.root)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if k != "mu_t"]
    with open(args.out / "wd_schedule.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    draw(rows, args.out / "wd_schedule.png")
    print("| wd | lr schedule | seed | validation | test | best step | max μ_t | final μ_t | drops ≥2x |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['weight_decay']:g} | {r['lr_scheduler']} | {r['seed']} | {r['validation']:.1f} | {r['test']:.1f} "
              f"| {r['best_step']} | {r['mu_max']:.3g} | {r['mu_final']:.3g} | {r['drops']} |")
    print("\n| wd | lr schedule | validation (mean) | test (mean) | drops (per run) |")
    print("| --- | --- | --- | --- | --- |")
    for wd, sched in sorted({(r["weight_decay"], r["lr_scheduler"]) for r in rows}):
        cell = [r for r in rows if (r["weight_decay"], r["lr_scheduler"]) == (wd, sched)]
        print(f"| {wd:g} | {sched} | {statistics.mean(r['validation'] for r in cell):.1f} "
              f"| {statistics.mean(r['test'] for r in cell):.1f} | {', '.join(str(r['drops']) for r in cell)} |")


if __name__ == "__main__":
    main()
