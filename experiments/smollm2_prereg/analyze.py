"""The preregistered analysis of the SmolLM2 experiment (docs/preregistration-smollm2.md).

    python experiments/smollm2_prereg/analyze.py              # every stage that has results
    python experiments/smollm2_prereg/analyze.py --stage A    # only stage A's decision, printed

Reads only committed artefacts under results/smollm2-prereg/ and writes
results/smollm2-prereg/analysis.md (+ CSVs, figures, A/decision.json, B/decision.json). Every
number of docs/results-smollm2.md's verdict comes from here. A stage with missing runs is
reported with the runs missing and no verdict is drawn from it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "results" / "smollm2-prereg"
SST2_TEST_MAJORITY = 444 / 872 * 100  # positive rows of the 872 GLUE dev rows
RTE_TEST_MAJORITY = 76 / 139 * 100    # entailment rows of the 139 test rows (split seed 42)
FAIL_MARGIN, TOST_MARGIN = 3.0, 2.0
ARMS_C = {"PT": ("pt", {}), "EPT": ("ept", {}), "PT1": ("pt", {"num_tokens": 1})}
C_SEEDS = (2, 3, 4, 5, 6)


# ------------------------------------------------------------------------------ reading
def runs(stage: str) -> list[dict]:
    """Every run folder of a stage: config, results (None if unfinished), eval/steps logs."""
    out = []
    for cfg_path in sorted((RES / stage).glob("*/config.json")):
        folder = cfg_path.parent
        res = folder / "results.json"
        results = json.loads(res.read_text()) if res.exists() else None
        out.append({"name": folder.name, "dir": folder, "config": json.loads(cfg_path.read_text()),
                    "results": results if results and results.get("status") == "finished" else None})
    return out


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def arm_of(run: dict) -> str:
    cfg = run["config"]
    opts = cfg.get("method_options") or {}
    for arm, (method, options) in ARMS_C.items():
        if cfg["method"] == method and opts == options:
            return arm
    return f"{cfg['method']}{opts or ''}"


def main_score(run: dict, split: str) -> float | None:
    r = run["results"]
    if not r or not r.get(split):
        return None
    return float(r[split][r["main_metric"]])


# ------------------------------------------------------------------------------ stage A
def stage_a(report: list[str]) -> dict | None:
    cells = []
    for template in ("t5", "natural"):
        path = RES / "A" / f"zeroshot-validation-{template}.json"
        if not path.exists():
            report.append(f"Stage A: {path.name} missing: no decision.")
            return None
        z = json.loads(path.read_text())
        for eos, metrics in z["label_score_eos"].items():
            cells.append({"template": template, "label_score_eos": eos == "true", "accuracy": metrics["accuracy"],
                          "examples": z["examples"]})
    # highest accuracy; ties: t5 first, then label_score_eos true (the preregistered tie-break)
    best = max(cells, key=lambda c: (round(c["accuracy"], 6), c["template"] == "t5", c["label_score_eos"]))
    decision = {"template": best["template"], "label_score_eos": best["label_score_eos"], "cells": cells,
                "rule": "highest zero-shot validation accuracy (500 rows); ties: t5, then label_score_eos true"}
    (RES / "A" / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    report += ["## Stage A: zero-shot validation (500 rows), template x label-score-EOS", "",
               "| template | label_score_eos | accuracy |", "| --- | --- | --- |"]
    report += [f"| {c['template']} | {str(c['label_score_eos']).lower()} | {c['accuracy']:.1f} |" for c in cells]
    report += ["", f"Chosen for stages B-E: **template {best['template']}, label_score_eos "
               f"{str(best['label_score_eos']).lower()}**.", ""]
    stage_a_checks(report)
    return decision


def stage_a_checks(report: list[str]) -> None:
    """Parts 2-3: bf16 vs fp32 on the two 200-step prompts, and the residual stream per layer."""
    prec = RES / "A" / "precision.json"
    if prec.exists():
        p = json.loads(prec.read_text())
        report += [f"### bf16 vs fp32 (300 validation rows; {p['machine']})", "",
                   "| run | prompt norm | fp32 acc | bf16 acc | predictions that differ | max / mean abs score diff (nats) |",
                   "| --- | --- | --- | --- | --- | --- |"]
        report += [f"| {r['run']} | {r['prompt_norm']:.3g} | {r['accuracy_fp32']:.1f} | {r['accuracy_bf16']:.1f} | "
                   f"{r['predictions_differ']} of {r['rows']} | {r['max_abs_score_diff']:.3g} / "
                   f"{r['mean_abs_score_diff']:.3g} |" for r in p["runs"]]
        report.append("")
    res = RES / "A" / "residual" / "residual.csv"
    if res.exists():
        import csv

        rows = list(csv.DictReader(res.open()))
        layers = sorted({int(r["layer"]) for r in rows})
        picks = layers[::5] + ([layers[-1]] if layers[-1] % 5 else [])
        report += ["### Residual stream at the prompt vs the input positions (64 validation rows)", "",
                   "Slot 0 is each row's first position, where a causal LM parks its attention sink: P'_0 here "
                   "(SmolLM2 adds no BOS), so for EPT (n = 1) it is the whole prompt. \"Rest of prompt\": PT's other "
                   "nine vectors.", "",
                   "| run | layer | prompt residual norm | slot 0 | rest of prompt | input residual norm | prompt / input "
                   "| prompt update norm |",
                   "| --- | --- | --- | --- | --- | --- | --- | --- |"]

        def cell(at, group, key="residual_norm"):
            return f"{float(at[group][key]):.3g}" if group in at else "–"

        for run in dict.fromkeys(r["run"] for r in rows):
            for layer in picks:
                at = {r["position"]: r for r in rows if r["run"] == run and int(r["layer"]) == layer}
                report.append(f"| {run} | {layer} | {cell(at, 'prompt')} | {cell(at, 'slot0')} | {cell(at, 'prompt_rest')} | "
                              f"{cell(at, 'input')} | {cell(at, 'prompt', 'ratio_to_input')} | "
                              f"{cell(at, 'prompt', 'update_norm')} |")
        report += ["", "Figure: `results/smollm2-prereg/A/residual/residual.png`.", ""]


# ------------------------------------------------------------------------------ stage B
def stage_b(report: list[str]) -> dict | None:
    rs = runs("B")
    expected = 12
    done = [r for r in rs if r["results"]]
    rows = [{"method": r["config"]["method"], "lr": r["config"]["lr"], "seed": r["config"]["seed"],
             "validation": main_score(r, "validation"), "best_step": r["results"]["best_step"],
             "final_mu_t": r["results"]["final_mu_t"]} for r in done]
    report += ["## Stage B: lr screen (validation only, 500 rows, best of 5 checkpoints)", ""]
    if len(done) < expected:
        from ept.sweep import load_spec

        names = [r.name for r in load_spec(ROOT / "experiments" / "smollm2_prereg" / "B_lr_screen.yaml", check_data=False).runs]
        started = {r["name"] for r in rs}
        unfinished = [n for n in names if n in started and n not in {r["name"] for r in done}]
        report += [f"{len(done)} of {expected} runs finished; unfinished: {', '.join(unfinished) or 'none'}; "
                   f"not started: {', '.join(n for n in names if n not in started) or 'none'}. No lr is chosen yet.", ""]
    report += ["| method | lr | seed | best validation | best step | final mu_t |", "| --- | --- | --- | --- | --- | --- |"]
    report += [f"| {x['method']} | {x['lr']:g} | {x['seed']} | {x['validation']:.1f} | {x['best_step']} | "
               f"{x['final_mu_t']:.3g} |" for x in sorted(rows, key=lambda x: (x["method"], x["lr"], x["seed"]))]
    report.append("")
    if len(done) < expected:
        return None
    choice = {}
    for method in ("pt", "ept"):
        means = {}
        for lr in sorted({x["lr"] for x in rows}):
            vals = [x["validation"] for x in rows if x["method"] == method and x["lr"] == lr]
            means[lr] = float(np.mean(vals))
        best = max(means, key=lambda lr: (round(means[lr], 6), lr))  # ties: the larger lr
        choice[method] = {"lr": best, "mean_validation": means}
    decision = {"lr": {m: c["lr"] for m, c in choice.items()}, "pt1_lr": choice["pt"]["lr"], "detail": choice,
                "rule": "max mean best-checkpoint validation over seeds 0-1; ties: the larger lr"}
    (RES / "B" / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    report += [f"Chosen lrs: PT {choice['pt']['lr']:g}, EPT {choice['ept']['lr']:g}, PT1 = PT's.", ""]
    return decision


# ------------------------------------------------------------------------------ stage C
def welch(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float, float]:
    """(difference of means a - b, lower, upper) of the Welch interval at `level`."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    d, se = a.mean() - b.mean(), math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else float("inf")
    t = stats.t.ppf(0.5 + level / 2, df)
    return d, d - t * se, d + t * se


def bootstrap(ca: np.ndarray, cb: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Seed x row bootstrap 95% percentile interval of mean(acc a) - mean(acc b). ca, cb: (seeds, rows)
    0/1 correctness; the same resampled rows for both arms, the seeds of each arm resampled apart."""
    rng = np.random.default_rng(seed)
    rows = ca.shape[1]
    w = rng.multinomial(rows, np.full(rows, 1 / rows), size=n).T  # (rows, n) resampled row counts
    acc_a, acc_b = 100 * ca @ w / rows, 100 * cb @ w / rows  # (seeds, n)
    ia, ib = rng.integers(0, len(ca), (n, len(ca))), rng.integers(0, len(cb), (n, len(cb)))
    d = acc_a[ia, np.arange(n)[:, None]].mean(1) - acc_b[ib, np.arange(n)[:, None]].mean(1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def correctness(run: dict) -> np.ndarray:
    preds = jsonl(run["dir"] / "predictions-test.jsonl")
    return np.array([float(p["prediction"] == p["label"]) for p in preds])


def test_accuracy(run: dict) -> float:
    """The run's test accuracy from its per-row predictions (unrounded), checked against results.json
    (which rounds): the number the endpoint uses, one per (arm, seed)."""
    c = correctness(run)
    acc, recorded = 100 * float(c.mean()) if len(c) else float("nan"), main_score(run, "test")
    if not len(c) or abs(acc - recorded) > 0.051:
        raise ValueError(f"{run['dir']}: predictions-test.jsonl gives accuracy {acc:.3f} on {len(c)} rows, "
                         f"results.json says {recorded}: the run's files disagree")
    return acc


def verdict(lo95: float, hi90: float) -> str:
    if lo95 > 0:
        return "beats"
    if hi90 < TOST_MARGIN:
        return "is not better than"
    return "inconclusive against"


def compare(name_a: str, name_b: str, arms: dict, report: list[str]) -> dict:
    a = np.array([test_accuracy(r) for r in arms[name_a]])
    b = np.array([test_accuracy(r) for r in arms[name_b]])
    d, lo95, hi95 = welch(a, b, 0.95)
    _, lo90, hi90 = welch(a, b, 0.90)
    blo, bhi = bootstrap(np.stack([correctness(r) for r in arms[name_a]]),
                         np.stack([correctness(r) for r in arms[name_b]]))
    v = verdict(lo95, hi90)
    report.append(f"| {name_a} - {name_b} | {d:+.2f} | [{lo95:+.2f}, {hi95:+.2f}] | [{lo90:+.2f}, {hi90:+.2f}] | "
                  f"[{blo:+.2f}, {bhi:+.2f}] | {name_a} **{v}** {name_b} |")
    return {"difference": d, "welch95": [lo95, hi95], "welch90": [lo90, hi90], "bootstrap95": [blo, bhi], "verdict": v}


def stage_c(report: list[str]) -> dict | None:
    rs = runs("C")
    arms: dict[str, list] = {}
    for r in rs:
        if r["results"]:
            arms.setdefault(arm_of(r), []).append(r)
    report += ["## Stage C: confirmation (SST-2 test, 872 rows, seeds 2-6)", ""]
    n_done = sum(len(v) for v in arms.values())
    report += ["| arm | seeds | test accuracy per seed | mean ± std | failures (< majority + 3) |",
               "| --- | --- | --- | --- | --- |"]
    for arm in ARMS_C:
        scores = [main_score(r, "test") for r in sorted(arms.get(arm, []), key=lambda r: r["config"]["seed"])]
        if scores:
            fails = sum(s < SST2_TEST_MAJORITY + FAIL_MARGIN for s in scores)
            sd = np.std(scores, ddof=1) if len(scores) > 1 else float("nan")
            report.append(f"| {arm} | {len(scores)} | {', '.join(f'{s:.1f}' for s in scores)} | "
                          f"{np.mean(scores):.1f} ± {sd:.1f} | {fails} of {len(scores)} |")
    zero = RES / "A" / "zeroshot-test.json"
    if zero.exists():
        z = json.loads(zero.read_text())
        report.append(f"| no prompt (frozen, zero-shot) | — | {z['accuracy']:.1f} | — | — |")
    report.append("")
    missing = [f"{arm} seed {seed}" for arm in ARMS_C for seed in C_SEEDS
               if seed not in {r["config"]["seed"] for r in arms.get(arm, [])}]
    if missing:
        report += [f"{n_done} of {len(ARMS_C) * len(C_SEEDS)} runs finished (missing: {', '.join(missing)}): "
                   "no verdict yet.", ""]
        return None
    report += ["| contrast | d | Welch 95% | Welch 90% (TOST) | seed x row bootstrap 95% | verdict |",
               "| --- | --- | --- | --- | --- | --- |"]
    out = {c: compare(*c.split(" - "), arms, report) for c in ("EPT - PT", "EPT - PT1", "PT1 - PT")}
    report.append("")
    return out


# ------------------------------------------------------------------------------ D, E, curves
def paired_stage(stage: str, title: str, report: list[str], majority: float | None = None,
                 paired_with: str | None = None) -> None:
    """A described (not tested) stage: its runs; with `paired_with`, each run's test difference to
    the same arm and seed there (stage D against C, as preregistered); with `majority`, E's rule."""
    rs = [r for r in runs(stage) if r["results"]]
    report += [f"## {title}", ""]
    if not rs:
        report += ["No finished run yet.", ""]
        return
    partner = {(arm_of(r), r["config"]["seed"]): r for r in runs(paired_with) if r["results"]} if paired_with else {}
    extra = f" | {paired_with} (same arm, seed) | difference" if paired_with else ""
    report += [f"| run | method | seed | validation | test | final mu_t{extra} |",
               "| --- " * (6 + 2 * bool(paired_with)) + "|"]
    for r in rs:
        row = (f"| {r['name']} | {arm_of(r)} | {r['config']['seed']} | {main_score(r, 'validation'):.1f} | "
               f"{main_score(r, 'test'):.1f} | {r['results']['final_mu_t']:.3g} |")
        if paired_with:
            other = partner.get((arm_of(r), r["config"]["seed"]))
            row += (f" {main_score(other, 'test'):.1f} | {main_score(r, 'test') - main_score(other, 'test'):+.1f} |"
                    if other else " not finished | – |")
        report.append(row)
    if majority is not None:
        by_arm: dict[str, list] = {}
        for r in rs:
            by_arm.setdefault(arm_of(r), []).append(main_score(r, "test"))
        means = {a: float(np.mean(v)) for a, v in by_arm.items()}
        informative = any(abs(m - majority) > FAIL_MARGIN for m in means.values())
        report.append("")
        shown = ", ".join(f"{a} {m:.1f}" for a, m in sorted(means.items()))
        diff = f" EPT - PT {means['EPT'] - means['PT']:+.1f} (described, not tested)." if {"EPT", "PT"} <= set(means) else ""
        report.append(f"Majority class {majority:.1f}; arm means {shown}: "
                      + (f"informative.{diff}" if informative else "**uninformative** (preregistered rule): no verdict."))
    report.append("")


def curves(report: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    for stage in ("B", "C", "D", "E"):
        rs = runs(stage)
        if not rs:
            continue
        fig = Figure(figsize=(11, 4))
        ax_v, ax_m = fig.subplots(1, 2)
        for i, r in enumerate(rs):
            color = f"C{i % 10}"
            ev, st = jsonl(r["dir"] / "eval.jsonl"), jsonl(r["dir"] / "steps.jsonl")
            key = "accuracy"
            ax_v.plot([e["step"] for e in ev], [e.get(key) for e in ev], marker="o", color=color, label=r["name"])
            ax_m.plot([s["step"] for s in st], [s["mu_t"] for s in st], color=color, label=r["name"])
        ax_v.set(xlabel="step", ylabel="validation accuracy", title=f"stage {stage}")
        ax_m.set(xlabel="step", ylabel="mu_t (norm of P')", yscale="log")
        ax_v.legend(fontsize=5)
        fig.tight_layout()
        fig.savefig(RES / f"curves-{stage}.png", dpi=110)
        report += [f"Curves of stage {stage}: `results/smollm2-prereg/curves-{stage}.png`.", ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["A", "all"], default="all")
    args = p.parse_args(argv)
    report = ["# Preregistered SmolLM2 experiment: analysis (generated by experiments/smollm2_prereg/analyze.py)", ""]
    stage_a(report)
    if args.stage == "all":
        stage_b(report)
        stage_c(report)
        paired_stage("D", "Stage D: sink token before P' (seeds 2-3)", report, paired_with="C")
        paired_stage("E", "Stage E: RTE (seeds 2-4, 400 steps)", report, RTE_TEST_MAJORITY)
        curves(report)
        # Only the whole analysis is the report: `--stage A` (run_all.sh, every start) once replaced
        # it with stage A alone, and the progress committer committed the B-E sections' deletion.
        (RES / "analysis.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
