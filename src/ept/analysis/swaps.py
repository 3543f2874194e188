"""The two no-training analyses on trained prompts (prompt swaps), run through `prober.Prober`.

- concat:   P_c = [P_i; ...; P_i] (l, e), the i-th token of a trained prompt repeated l = 1..10
            times, scored on the run's task; the full prompt's score is the dotted line (Fig. 4).
- transfer: task A's prompt scored on task B (zero-shot), over A's own score on A, and the cosine
            similarity between the tasks' prompts (Fig. 10, paper Appendix A.2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ept.analysis.output import figure, save_figure, write_csv, write_json
from ept.analysis.prober import Prober
from ept.analysis.runs import RunRecord, group_by, load_prompt, mean_std


def concat_rows(records: list[RunRecord], token: int = 0, lengths: str = "1-10", split: str = "validation",
                max_examples: int | None = None, data_dir: str | None = None) -> dict:
    """{"runs": the score of P_token repeated l times per run and l (with the full prompt's
    score), "summary": the mean over each method's runs per (task, l) and its ratio to the full
    prompt, "lengths": the l values}."""
    records = [r for r in records if r.method != "ft"]
    if not records:
        raise ValueError("concat needs finished prompt runs (not ft)")
    ls = _parse_lengths(lengths)
    prober = Prober(data_dir)
    rows = []
    for k, r in enumerate(records, 1):
        print(f"concat: {r.name} ({k}/{len(records)}): {len(ls) + 1} evaluations", file=sys.stderr, flush=True)
        model = prober.model(r)
        with torch.no_grad():
            prompt = model.prompt().detach()  # (n, e)
        if not 0 <= token < prompt.shape[0]:
            raise ValueError(f"{r.name}: token {token} is out of range; its prompt has n={prompt.shape[0]} tokens")
        original = prober.evaluate(model, r, None, split=split, max_examples=max_examples)[r.main_metric]
        for length in ls:
            p_c = prompt[token:token + 1].expand(length, -1)  # (l, e): P_i repeated l times
            value = prober.evaluate(model, r, p_c, split=split, max_examples=max_examples)[r.main_metric]
            rows.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "token": token,
                         "length": length, "metric": r.main_metric, "score": value, "original": original,
                         "original_num_tokens": prompt.shape[0]})
    summary = []
    for task in dict.fromkeys(r.task for r in records):
        for method, mrows in group_by([x for x in rows if x["task"] == task], lambda x: x["method"]).items():
            means = [mean_std([x["score"] for x in mrows if x["length"] == length])[0] for length in ls]
            orig = mean_std(list({x["run"]: x["original"] for x in mrows}.values()))[0]
            summary += [{"task": task, "method": method, "length": length, "mean": m, "original": orig,
                         "ratio": (m / orig if orig else float("nan"))} for length, m in zip(ls, means)]
    return {"runs": rows, "summary": summary, "lengths": ls}


def draw_concat(tables: dict, token: int = 0, split: str = "validation"):
    """Fig. 4: one panel per task, one line per method (mean over its runs), the full prompt dotted."""
    rows, ls = tables["runs"], tables["lengths"]
    tasks = list(dict.fromkeys(x["task"] for x in rows))
    fig, axes = figure((4.5 * len(tasks), 3.5), 1, len(tasks))
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        by_method = group_by([x for x in tables["summary"] if x["task"] == task], lambda x: x["method"])
        for i, (method, points) in enumerate(by_method.items()):
            ax.plot(ls, [x["mean"] for x in points], marker="o", color=f"C{i}", label=method)
            ax.axhline(points[0]["original"], color=f"C{i}", linestyle=":")
        ax.set_xlabel(f"concatenation length l (token P_{token})")
        ax.set_ylabel(f"{split} {next(x['metric'] for x in rows if x['task'] == task)}")
        ax.set_title(f"{task}: [P_{token}] x l vs full prompt (dotted)")
        ax.legend(fontsize=8)
    return fig


def concat(records: list[RunRecord], out: Path, token: int = 0, lengths: str = "1-10", split: str = "validation",
           max_examples: int | None = None, data_dir: str | None = None, **_) -> dict:
    """Fig. 4: the score of one trained prompt token repeated l times, beside the full prompt's."""
    tables = concat_rows(records, token, lengths, split, max_examples, data_dir)
    png = save_figure(draw_concat(tables, token, split), out / "concat.png")
    write_csv(out / "concat.csv", tables["runs"])
    write_csv(out / "concat_summary.csv", tables["summary"])
    write_json(out / "concat.json", {"split": split, "token": token, "lengths": tables["lengths"],
                                     "summary": tables["summary"]})
    return {"png": str(png), "csv": [str(out / "concat.csv"), str(out / "concat_summary.csv")]}


def _parse_lengths(text) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(x) for x in text]
    text = str(text)
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def transfer_rows(records: list[RunRecord], method: str | None = "ept_star", split: str = "test",
                  max_examples: int | None = None, data_dir: str | None = None, normalize: str = "target") -> dict:
    """{"runs": task A's prompt scored on task B per run (raw and both ratios), "tasks",
    "matrix": the mean ratio per (A, B) by `normalize`, "other": by the other normalisation,
    "cosine": between the tasks' mean prompts, "own_score": each task's own prompt on itself}."""
    if normalize not in ("target", "source"):
        raise ValueError(f"normalize={normalize!r}; allowed: target, source")
    from ept.method_configs import METHODS

    if method:
        method = METHODS.canonical(method)
        records = [r for r in records if r.method == method]
    if not records:
        raise ValueError(f"transfer needs finished runs of method {method!r}")
    by_task = group_by(records, lambda r: r.task)
    tasks = list(by_task)
    if len(tasks) < 2:
        raise ValueError(f"transfer needs runs on at least two tasks, got {tasks}")
    prober = Prober(data_dir)
    raw: dict[tuple[str, str], list[float]] = {}
    rows = []
    for a in tasks:
        for r in by_task[a]:
            print(f"transfer: {r.name} on {len(tasks)} tasks", file=sys.stderr, flush=True)
            model = prober.model(r)
            for b in tasks:
                spec = by_task[b][0].spec  # a task file's runs carry its spec
                value = prober.evaluate(model, r, None, task=spec, split=split, max_examples=max_examples)[spec.main_metric]
                raw.setdefault((a, b), []).append(value)
                rows.append({"source": a, "target": b, "run": r.name, "seed": r.seed,
                             "metric": spec.main_metric, "score": value})
    own = {t: mean_std(raw[(t, t)])[0] for t in tasks}
    for row in rows:
        row["ratio_to_source"] = row["score"] / own[row["source"]] if own[row["source"]] else float("nan")
        row["ratio_to_target"] = row["score"] / own[row["target"]] if own[row["target"]] else float("nan")
    other_key = "ratio_to_source" if normalize == "target" else "ratio_to_target"
    matrix, other = ([[mean_std([x[key] for x in rows if x["source"] == a and x["target"] == b])[0] for b in tasks]
                      for a in tasks] for key in (f"ratio_to_{normalize}", other_key))
    mean_prompt = {t: torch.stack([load_prompt(r).mean(0) for r in by_task[t]]).mean(0) for t in tasks}
    unit = torch.nn.functional.normalize(torch.stack([mean_prompt[t] for t in tasks]), dim=-1)
    return {"runs": rows, "tasks": tasks, "matrix": matrix, "other": other, "cosine": (unit @ unit.T).tolist(),
            "own_score": own, "method": method}


def draw_transfer(tables: dict, split: str = "test", normalize: str = "target"):
    """Fig. 10: (left) cosine similarity of the tasks' prompts; (right) the transfer ratio matrix."""
    tasks = tables["tasks"]
    fig, ((left, right),) = figure((4 + 1.2 * len(tasks), 2 + 0.6 * len(tasks)), 1, 2)
    for ax, data, title, vmin in ((left, tables["cosine"], "prompt cosine similarity", -1),
                                  (right, tables["matrix"], f"transfer {split} score / {normalize}'s own", 0)):
        im = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=1)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, rotation=45, ha="right")
        ax.set_yticks(range(len(tasks)))
        ax.set_yticklabels(tasks)
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                ax.text(j, i, f"{data[i][j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if data[i][j] > 0.6 else "white")  # readable on viridis
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    right.set_xlabel("target task B")
    right.set_ylabel("source prompt A")
    return fig


def transfer(records: list[RunRecord], out: Path, method: str | None = "ept_star", split: str = "test",
             max_examples: int | None = None, data_dir: str | None = None, normalize: str = "target", **_) -> dict:
    """Fig. 10: (left) cosine similarity of the tasks' prompts (mean P' per task, averaged over
    seeds); (right) score of task A's prompt on task B (rows A = source prompt, columns B =
    target task) as a ratio of an "own" score:

    - normalize="target" (default): over B's own prompt on B. Numerator and denominator are then
      the same metric on the same examples, which is what the paper's 0-1 scale needs.
    - normalize="source": over A's own score on A. This mixes metrics when A and B differ (MCC
      vs accuracy vs Pearson), so read it only between tasks that share a metric.

    The CSV holds the raw scores and both ratios."""
    t = transfer_rows(records, method, split, max_examples, data_dir, normalize)
    tasks, cos, matrix, other = t["tasks"], t["cosine"], t["matrix"], t["other"]
    png = save_figure(draw_transfer(t, split, normalize), out / "transfer.png")
    write_csv(out / "transfer.csv", t["runs"])
    sim_rows = [{"task_a": a, "task_b": b, "cosine": cos[i][j]} for i, a in enumerate(tasks) for j, b in enumerate(tasks)]
    write_csv(out / "transfer_similarity.csv", sim_rows)
    write_json(out / "transfer.json", {
        "method": t["method"], "split": split, "tasks": tasks, "own_score": t["own_score"], "normalize": normalize,
        "ratio_to_target": matrix if normalize == "target" else other,
        "ratio_to_source": matrix if normalize == "source" else other, "cosine": cos})
    return {"png": str(png), "csv": [str(out / "transfer.csv"), str(out / "transfer_similarity.csv")]}
