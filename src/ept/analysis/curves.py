"""Analyses that only read logs and results: no model is loaded.

- norms:     mu_t (Eq. 4) per step beside the validation score (paper Fig. 2, Fig. 11)
- hidden:    score vs EPT hidden size h, mean ± std over seeds (Fig. 5, Fig. 12)
- broadcast: score vs broadcast length n of EPT's single prompt (Fig. 7)
- lr:        score vs learning rate, one line per method (Fig. 8)
- ablation:  EPT + LayerNorm / residual / activations: bars and norm-vs-score scatter (Fig. 9)
- init:      uniform / sampled vocabulary / label vocabulary initialisation (Table 6)

Every sweep-style analysis groups runs by (task, x, method), averages the best state's main
metric over seeds, and writes one row per run plus one row per group to CSV.

Each analysis is `<name>_rows(records, ...)` (the tidy rows: no matplotlib), `draw_<name>(rows)`
(the figure, from those rows alone) and `<name>(records, out, ...)`, which writes both.
"""

from __future__ import annotations

from pathlib import Path

from ept.analysis.output import figure, save_figure, write_csv, write_json
from ept.analysis.runs import RunRecord, group_by, mean_std
from ept.training.rundir import atomic_write_text

# Switches an ablation varies, and their defaults in EPT (paper Section 3.3: none of them).
ABLATION_SWITCHES = {"layer_norm": False, "residual": False, "activation": "none", "bias": False}


def _tasks(records) -> list[str]:
    return list(dict.fromkeys(r.task for r in records))


def _tasks_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in rows))


def _axes_grid(n: int, rows: int = 1, width: float = 4.2, height: float = 3.2):
    return figure((width * n, height * rows), rows, n)


# Settings that must match for runs to share a curve (the varied one is left out of the key).
CONTEXT_KEYS = ("backbone", "lr", "steps", "batch_size", "weight_decay", "max_length", "few_shot", "linear_head", "dtype")


def same_context(records: list[RunRecord], vary: str | None = None) -> tuple[list[RunRecord], list[str]]:
    """Per task, keep the runs of the most common training context (lr, steps, backbone, ...),
    ignoring `vary`: a curve over h must not mix lr 0.01 runs into its h = 1 point."""
    keys = tuple(k for k in CONTEXT_KEYS if k != vary)
    kept, dropped = [], []
    for task, runs in group_by(records, lambda r: r.task).items():
        by_ctx = group_by(runs, lambda r: tuple(str(r.config.get(k)) for k in keys))
        best = max(by_ctx.values(), key=len)
        kept += best
        dropped += [f"{r.name}: other training context than the {len(best)} runs kept for {task}"
                    for r in runs if r not in best]
    return kept, dropped


def _need(records, what: str) -> None:
    if not records:
        raise ValueError(f"no finished runs to analyse for {what}; check the folders (ept sweep SPEC --dry-run)")


# ------------------------------------------------------------------------------ norms
def norms_rows(records: list[RunRecord]) -> dict:
    """{"steps": mu_t and loss per logged step, "evals": the validation main metric per
    evaluation, "runs": one summary row per run, "metrics": task -> main metric}."""
    _need(records, "norms")
    step_rows, eval_rows = [], []
    for r in records:
        for s in r.steps_log():
            step_rows.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed,
                              "step": s["step"], "mu_t": s["mu_t"], "loss": s["loss"]})
        for e in r.eval_log():
            eval_rows.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "step": e["step"],
                              "metric": r.main_metric, "value": e.get(r.main_metric)})
    final = [{"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "final_mu_t": r.results.get("final_mu_t"),
              "best_validation": r.score("validation"), "test": r.score("test")} for r in records]
    metrics = {r.task: r.main_metric for r in reversed(records)}  # the first run's, as the panels say
    return {"steps": step_rows, "evals": eval_rows, "runs": final, "metrics": metrics}


def draw_norms(tables: dict):
    """Fig. 2/11: row (a) mu_t per step (log scale), row (b) validation main metric per evaluation;
    one column per task (wrapped at 3), one line per method, the mean over its seeds."""
    runs = tables["runs"]
    steps, evals = group_by(tables["steps"], lambda x: x["run"]), group_by(tables["evals"], lambda x: x["run"])
    tasks = _tasks_of(runs)
    ncols = min(3, len(tasks))  # wrap: (a)/(b) row pairs of at most 3 tasks
    fig, grid = _axes_grid(ncols, rows=2 * -(-len(tasks) // ncols))
    for k in range(len(tasks), ncols * (-(-len(tasks) // ncols))):
        grid[2 * (k // ncols)][k % ncols].axis("off")
        grid[2 * (k // ncols) + 1][k % ncols].axis("off")
    colors = {}
    for k, task in enumerate(tasks):
        axes, col = (grid[2 * (k // ncols)], grid[2 * (k // ncols) + 1]), k % ncols
        for method, mruns in group_by([r for r in runs if r["task"] == task], lambda r: r["method"]).items():
            color = colors.setdefault(method, f"C{len(colors)}")
            mus = [[s["mu_t"] for s in steps.get(r["run"], [])] for r in mruns]
            width = min(len(m) for m in mus)
            mean = [sum(m[i] for m in mus) / len(mus) for i in range(width)]
            axes[0][col].plot(range(1, width + 1), mean, color=color, label=method)
            logged = [evals.get(r["run"], []) for r in mruns]
            points = sorted({e["step"] for ev in logged for e in ev})
            ys = []
            for step in points:
                vals = [e["value"] for ev in logged for e in ev if e["step"] == step]
                ys.append(sum(vals) / len(vals))
            axes[1][col].plot(points, ys, marker="o", color=color, label=method)
        axes[0][col].set_title(f"{task}: (a) norm $\\mu_t$")
        axes[0][col].set_yscale("log")
        axes[0][col].set_xlabel("step")
        axes[1][col].set_title(f"{task}: (b) validation")
        axes[1][col].set_xlabel("step")
        axes[1][col].set_ylabel(tables["metrics"][task])
    grid[0][0].legend(fontsize=8)
    return fig


def norms(records: list[RunRecord], out: Path, **_) -> dict:
    tables = norms_rows(records)
    png = save_figure(draw_norms(tables), out / "norms.png")
    write_csv(out / "norms.csv", tables["steps"], ["run", "task", "method", "seed", "step", "mu_t", "loss"])
    write_csv(out / "norms_eval.csv", tables["evals"], ["run", "task", "method", "seed", "step", "metric", "value"])
    write_json(out / "norms.json", {"runs": tables["runs"]})
    return {"png": str(png), "csv": [str(out / "norms.csv"), str(out / "norms_eval.csv")], "json": str(out / "norms.json")}


# ------------------------------------------------------------------------------ score vs x
def sweep_rows(records, name: str, xkey, split: str, series=lambda r: r.method) -> dict:
    """{"runs": one row per run (x, series, score), "groups": mean ± std over seeds per (task,
    series, x), "left_out": runs of another training context, "metrics": task -> main metric}."""
    records, dropped = same_context(records, vary=name if name == "lr" else None)
    _need(records, name)
    rows, groups = [], []
    for r in records:
        rows.append({"run": r.name, "task": r.task, "method": r.method, "series": series(r), "seed": r.seed,
                     "x": xkey(r), "metric": r.main_metric, "score": r.score(split), "final_mu_t": r.results.get("final_mu_t")})
    for task in _tasks(records):
        for s, runs in group_by([r for r in records if r.task == task], series).items():
            by_x = group_by(runs, xkey)
            for x in sorted(by_x):
                m, sd = mean_std([v for v in (r.score(split) for r in by_x[x]) if v is not None])
                groups.append({"task": task, "series": s, "x": x, "n_seeds": len(by_x[x]), "mean": m, "std": sd})
    metrics = {r.task: r.main_metric for r in reversed(records)}
    return {"runs": rows, "groups": groups, "left_out": dropped, "metrics": metrics}


def draw_sweep(tables: dict, xlabel: str, split: str, logx: bool = False, title: str = ""):
    """One panel per task, one line per series over x: the mean, ± std shaded."""
    tasks = _tasks_of(tables["runs"])
    fig, axes = _axes_grid(len(tasks))
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        by_series = group_by([g for g in tables["groups"] if g["task"] == task], lambda g: g["series"])
        for i, (s, points) in enumerate(by_series.items()):
            xs, means, stds = [g["x"] for g in points], [g["mean"] for g in points], [g["std"] for g in points]
            ax.plot(xs, means, marker="o", color=f"C{i}", label=str(s))
            ax.fill_between(xs, [m - sd for m, sd in zip(means, stds)], [m + sd for m, sd in zip(means, stds)],
                            color=f"C{i}", alpha=0.2)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{split} {tables['metrics'][task]}")
        ax.set_title(f"{task}{': ' + title if title else ''}")
        ax.legend(fontsize=8)
    return fig


def _sweep_plot(records, out: Path, name: str, xkey, xlabel: str, split: str, logx: bool = False,
                series=lambda r: r.method, title: str = "") -> dict:
    """One panel per task, one line per series, x from `xkey(record)`; mean ± std over seeds."""
    tables = sweep_rows(records, name, xkey, split, series)
    png = save_figure(draw_sweep(tables, xlabel, split, logx, title), out / f"{name}.png")
    write_csv(out / f"{name}.csv", tables["runs"])
    write_csv(out / f"{name}_summary.csv", tables["groups"], ["task", "series", "x", "n_seeds", "mean", "std"])
    write_json(out / f"{name}.json", {"split": split, "groups": tables["groups"], "left_out": tables["left_out"]})
    return {"png": str(png), "csv": [str(out / f"{name}.csv"), str(out / f"{name}_summary.csv")]}


def _ept_only(records, vary: str) -> list[RunRecord]:
    """EPT-family runs whose switches are the defaults except `vary` (so the x axis is clean)."""
    keep = []
    for r in records:
        if r.method not in ("ept", "ept_star"):
            continue
        o = r.options
        if any(o.get(k) != v for k, v in ABLATION_SWITCHES.items()):
            continue
        if vary != "hidden_size" and o.get("hidden_size") != 1:
            continue
        if vary != "init" and o.get("init") != "uniform":
            continue
        keep.append(r)
    return keep


def hidden(records, out: Path, split: str = "test", **_) -> dict:
    """Fig. 5/12: score vs hidden size h of phi (EPT, n fixed per series)."""
    runs = [r for r in _ept_only(records, "hidden_size")]
    return _sweep_plot(runs, out, "hidden", lambda r: r.options["hidden_size"], "hidden size h", split, logx=True,
                       series=lambda r: f"{r.method} (n={r.options['num_tokens']})", title="EPT hidden size")


def broadcast(records, out: Path, split: str = "test", **_) -> dict:
    """Fig. 7: score vs broadcast length n of phi(P1) (ept with num_tokens=n; ept_star is n=10)."""
    runs = [r for r in _ept_only(records, "num_tokens")]
    return _sweep_plot(runs, out, "broadcast", lambda r: r.options["num_tokens"], "broadcast length n", split,
                       series=lambda r: "EPT", title="broadcast prompt")


def lr(records, out: Path, split: str = "test", **_) -> dict:
    """Fig. 8: score vs learning rate, one line per method (method switches at their defaults)."""
    from ept.analysis.runs import resolved_options

    runs = [r for r in records if r.options == resolved_options({"method": r.method, "method_options": {}})]
    return _sweep_plot(runs, out, "lr", lambda r: r.config["lr"], "learning rate", split, logx=True)


# ------------------------------------------------------------------------------ ablation
def variant_name(options: dict) -> str:
    parts = [("+LayerNorm" if k == "layer_norm" else "+residual" if k == "residual" else "+bias" if k == "bias"
              else f"+{options[k].upper() if options[k] in ('relu', 'gelu') else options[k]}")
             for k, default in ABLATION_SWITCHES.items() if options.get(k) != default]
    return " ".join(parts) or "None"


ABLATION_ORDER = ["None", "+LayerNorm", "+residual", "+RELU", "+GELU", "+tanh", "+sigmoid"]


def ablation_rows(records, split: str = "test") -> dict:
    """{"runs": one row per EPT run (n=1, h=1) with its variant, score and final mu_t, "groups":
    mean ± std per (task, variant), "variants": their plot order, "left_out": other contexts}."""
    runs = [r for r in records if r.method == "ept" and r.options.get("hidden_size") == 1
            and r.options.get("num_tokens") == 1 and r.options.get("init") == "uniform"]
    runs, dropped = same_context(runs)
    _need(runs, "ablation (ept runs, n=1, h=1)")
    rows = [{"run": r.name, "task": r.task, "seed": r.seed, "variant": variant_name(r.options), "metric": r.main_metric,
             "score": r.score(split), "final_mu_t": r.results.get("final_mu_t")} for r in runs]
    variants = sorted({row["variant"] for row in rows},
                      key=lambda v: (ABLATION_ORDER.index(v) if v in ABLATION_ORDER else 99, v))
    groups = []
    for task in _tasks(runs):
        for v in variants:
            vals = [row["score"] for row in rows if row["task"] == task and row["variant"] == v and row["score"] is not None]
            m, sd = mean_std(vals)
            mus = [row["final_mu_t"] for row in rows if row["task"] == task and row["variant"] == v]
            groups.append({"task": task, "variant": v, "n_seeds": len(vals), "mean": m, "std": sd,
                           "mean_final_mu_t": mean_std([x for x in mus if x is not None])[0]})
    return {"runs": rows, "groups": groups, "variants": variants, "left_out": dropped}


def draw_ablation(tables: dict, split: str = "test"):
    """Fig. 9: (left) score per added structure, per task; (right) final mu_t vs score."""
    rows, groups, variants = tables["runs"], tables["groups"], tables["variants"]
    tasks = _tasks_of(rows)
    fig, ((left, right),) = figure((11, 4), 1, 2)
    width = 0.8 / max(1, len(tasks))
    for t, task in enumerate(tasks):
        mine = {g["variant"]: g for g in groups if g["task"] == task}
        xs = [i + t * width for i in range(len(variants))]
        left.bar(xs, [mine[v]["mean"] for v in variants], width=width, yerr=[mine[v]["std"] for v in variants],
                 label=task, color=f"C{t}")
    left.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(variants))])
    left.set_xticklabels(variants, rotation=30, ha="right")
    scores = [g["mean"] for g in groups if g["mean"] == g["mean"]]
    if scores:  # zoom on the bars: differences of a few points are the whole story
        left.set_ylim(min(scores) - 5, max(scores) + 3)
    left.set_ylabel(f"{split} score")
    left.set_title("EPT + added structure")
    left.legend(fontsize=8)
    for i, v in enumerate(variants):
        pts = [(row["score"], row["final_mu_t"]) for row in rows if row["variant"] == v and row["score"] is not None]
        right.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", label=v)
    right.set_xlabel(f"{split} score")
    right.set_ylabel("final norm $\\mu_t$")
    right.set_yscale("symlog", linthresh=1.0)  # symlog: a dead (ReLU) prompt has norm exactly 0
    right.set_title("norm vs score")
    right.legend(fontsize=7)
    return fig


def ablation(records, out: Path, split: str = "test", **_) -> dict:
    tables = ablation_rows(records, split)
    png = save_figure(draw_ablation(tables, split), out / "ablation.png")
    write_csv(out / "ablation.csv", tables["runs"])
    write_csv(out / "ablation_summary.csv", tables["groups"])
    write_json(out / "ablation.json", {"split": split, "groups": tables["groups"], "left_out": tables["left_out"]})
    return {"png": str(png), "csv": [str(out / "ablation.csv"), str(out / "ablation_summary.csv")]}


# ------------------------------------------------------------------------------ init
INIT_ORDER = ["uniform", "vocab", "label", "text"]


def init_rows(records, split: str = "test") -> dict:
    """{"runs": one row per EPT run with its init and score, "groups": mean ± std per (task,
    init), "inits": their order, "table": one line per task, "mean ± std" per init (Table 6)}."""
    runs, dropped = same_context(_ept_only(records, "init"))
    _need(runs, "init (ept runs)")
    rows = [{"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "init": r.options["init"],
             "metric": r.main_metric, "score": r.score(split)} for r in runs]
    inits = sorted({row["init"] for row in rows}, key=lambda v: INIT_ORDER.index(v) if v in INIT_ORDER else 99)
    table, groups = [], []
    for task in _tasks(runs):
        line = {"task": task}
        for i in inits:
            vals = [row["score"] for row in rows if row["task"] == task and row["init"] == i and row["score"] is not None]
            m, sd = mean_std(vals)
            groups.append({"task": task, "init": i, "n_seeds": len(vals), "mean": m, "std": sd})
            line[i] = "—" if not vals else f"{m:.1f} ± {sd:.1f}"
        table.append(line)
    return {"runs": rows, "groups": groups, "inits": inits, "table": table}


def draw_init(tables: dict, split: str = "test"):
    """Table 6 as a bar chart: one group of bars per task, one bar per init."""
    inits, groups, tasks = tables["inits"], tables["groups"], _tasks_of(tables["runs"])
    fig, ((ax,),) = figure((1.5 + 1.6 * len(tasks), 3.5))
    width = 0.8 / max(1, len(inits))
    for j, i in enumerate(inits):
        g = [next(x for x in groups if x["task"] == t and x["init"] == i) for t in tasks]
        ax.bar([k + j * width for k in range(len(tasks))], [x["mean"] for x in g], width=width,
               yerr=[x["std"] for x in g], label=i, color=f"C{j}")
    ax.set_xticks([k + width * (len(inits) - 1) / 2 for k in range(len(tasks))])
    ax.set_xticklabels(tasks)
    ax.set_ylabel(f"{split} score")
    ax.set_title("EPT prompt initialisation")
    ax.legend(fontsize=8)
    return fig


def init(records, out: Path, split: str = "test", **_) -> dict:
    """Table 6: EPT score by prompt initialisation, one row per task (also a bar chart)."""
    tables = init_rows(records, split)
    inits = tables["inits"]
    md = ["| task | " + " | ".join(inits) + " |", "| --- |" + " --- |" * len(inits)]
    md += ["| " + " | ".join([t["task"]] + [t[i] for i in inits]) + " |" for t in tables["table"]]
    atomic_write_text(out / "init.md", "\n".join(md) + "\n")
    png = save_figure(draw_init(tables, split), out / "init.png")
    write_csv(out / "init.csv", tables["runs"])
    write_csv(out / "init_summary.csv", tables["groups"])
    return {"png": str(png), "csv": [str(out / "init.csv"), str(out / "init_summary.csv")], "md": str(out / "init.md")}
