"""Paper-style result tables from run folders: Markdown and LaTeX (EPT paper Tables 1, 2, 3).

    ept report /work/runs-cpu/main --out docs/tables
    ept report runs/t5-base-main runs/t5-large-main --out paper-tables

- Table 1: GLUE (CoLA, MRPC, RTE, STS-B, MNLI, QNLI, QQP, SST-2, Avg) and SuperGLUE (BoolQ, CB,
  WiC, WSC, MultiRC, Avg) with Param/task, one block of rows per backbone.
- Table 2: MRQA (NQ, HotpotQA, SearchQA, NewsQA, Avg; F1) and Others (WinoGrande, Yelp, SciTail,
  PAWS, Avg).
- Table 3: few-shot k = 4 / 16 / 32, benchmark averages per method (and per task).

A cell is (backbone, method, task[, k]): the test main metric of each run's best state, mean ±
std over seeds. As in the paper, fine-tuning is excluded from the ranking; the best cell of a
column is bold and the second underlined. A task with no finished run shows "—" and a footnote.
Runs in one cell that differ in anything but the seed and the learning rate (steps, method
switches, ...) are not averaged: the cell says "mixed" and a footnote names the differing settings.

Learning-rate search (Appendix B.2): when a cell holds runs at several learning rates, the lr
with the best mean *validation* score over its seeds (each run's best checkpoint) is kept and
its *test* scores are reported; the notes name the winner. Test scores never take part in the
choice. Invalid generations (`invalid` in results.json: outputs that are no label word, scored
as wrong) are summed per cell and listed in a footnote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ept.analysis.runs import RunRecord, group_by, load_records, mean_std
from ept.training.rundir import NEUTRAL_WHEN, identity, train_defaults

METHOD_ORDER = ["ft", "ptuning", "resprompt", "pt", "ept", "ept_star"]
METHOD_NAMES = {"ft": "FT", "ptuning": "P-Tuning", "resprompt": "ResPrompt", "pt": "PT", "ept": "EPT", "ept_star": "EPT*"}
BACKBONE_NAMES = {"minilm": "MiniLM-L6", "t5-small": "T5-small", "t5-base": "T5-base", "t5-large": "T5-large"}

# (benchmark title, [(task, column header, metric label)])
TABLE1 = [("GLUE", [("cola", "CoLA", "Matt"), ("mrpc", "MRPC", "Acc"), ("rte", "RTE", "Acc"),
                    ("stsb", "STS-B", "Pearson"), ("mnli", "MNLI", "Acc"), ("qnli", "QNLI", "Acc"),
                    ("qqp", "QQP", "Acc"), ("sst2", "SST-2", "Acc")]),
          ("SuperGLUE", [("boolq", "Boolq", "Acc"), ("cb", "CB", "F1/Acc"), ("wic", "WiC", "Acc"),
                         ("wsc", "WSC", "Acc"), ("multirc", "Multi", "F1")])]
TABLE2 = [("MRQA", [("nq", "NQ", "F1"), ("hotpotqa", "HP", "F1"), ("searchqa", "SQA", "F1"), ("newsqa", "News", "F1")]),
          ("Others", [("winogrande", "WG", "Acc"), ("yelp", "Yelp", "Acc"), ("scitail", "SciTail", "Acc"),
                      ("paws", "PAWS", "Acc")])]
# Settings that may differ inside a cell: the seed and where things were written.
NOT_CONTEXT = {"seed", "out", "data_dir", "tensorboard", "eval_batch_size", "task", "method", "backbone", "few_shot",
               "overwrite", "task_file"}


@dataclass
class Cell:
    runs: list[RunRecord] = field(default_factory=list)  # after an lr search: the chosen lr's runs only
    mixed: dict = field(default_factory=dict)  # setting -> distinct values, when runs disagree
    search: dict | None = None  # {"chosen": lr, "validation": {lr: mean}, "runs": n} after an lr search

    @property
    def scores(self) -> list[float]:
        return [s for s in (r.score("test") for r in self.runs) if s is not None]

    @property
    def mean(self) -> float | None:
        return None if self.mixed or not self.scores else mean_std(self.scores)[0]

    @property
    def std(self) -> float:
        return mean_std(self.scores)[1] if self.scores else math.nan


# Settings a cell may hold several values of because they are searched, then chosen on validation.
SEARCHED = {"lr"}


def _context(record: RunRecord) -> dict:
    """The settings that decide the run's numbers, as its identity reads them (a pair setting of a
    single-sentence task is neutral, as in `ept.training.rundir.identity`), bar the cell's own keys and lr."""
    ident = identity(record.config, train_defaults())
    return {k: v for k, v in ident.items() if k not in NOT_CONTEXT and k not in SEARCHED}


def _train_files(record: RunRecord) -> str | None:
    """The file(s) that trained the run (results.json's `train_data`; None for runs from before it)."""
    files = ((record.results or {}).get("train_data") or {}).get("files")
    return "+".join(files) if files else None


def build_cells(records: list[RunRecord]) -> dict[tuple, Cell]:
    """{(backbone, method, task, few_shot): Cell}, with mixed settings detected."""
    cells: dict[tuple, Cell] = {}
    for r in records:
        key = (r.config["backbone"], r.method, r.task, r.config.get("few_shot"))
        cells.setdefault(key, Cell()).runs.append(r)
    for cell in cells.values():
        contexts = [_context(r) for r in cell.runs]
        for k in sorted(set().union(*contexts)):  # a neutral value is absent from an identity: say what it is
            values = {repr(c.get(k, NEUTRAL_WHEN.get(k))) for c in contexts}
            if len(values) > 1:
                cell.mixed[k] = sorted(values)
        files = {f for f in map(_train_files, cell.runs) if f}
        if len(files) > 1:  # e.g. the full train set in one run, a fallback sample in another
            cell.mixed["train file"] = sorted(files)
        if not cell.mixed:
            select_lr(cell)
    return cells


def select_lr(cell: Cell) -> None:
    """Appendix B.2's search: keep the runs of the lr with the best mean validation score.
    Only `score("validation")` is read here: the test set never chooses. Ties go to the smaller lr."""
    by_lr = group_by(cell.runs, lambda r: r.config["lr"])
    if len(by_lr) < 2:
        return
    validation = {}
    for lr, runs in by_lr.items():
        scores = [v for v in (r.score("validation") for r in runs) if v is not None]
        if scores:
            validation[lr] = mean_std(scores)[0]
    if not validation:  # nothing to choose with: refuse to average across learning rates
        cell.mixed["lr"] = sorted(repr(lr) for lr in by_lr)
        return
    chosen = max(sorted(validation), key=lambda lr: validation[lr])  # sorted + max: the smaller lr on ties
    cell.search = {"chosen": chosen, "validation": {lr: validation.get(lr) for lr in sorted(by_lr)},
                   "runs": len(cell.runs)}
    cell.runs = by_lr[chosen]


def invalid_count(runs: list[RunRecord], split: str = "test") -> tuple[int, int]:
    """(invalid predictions, predictions) on `split`, summed over runs (results.json `invalid`)."""
    invalid = total = 0
    for r in runs:
        metrics = (r.results or {}).get(split) or {}
        if metrics.get("invalid") is not None:
            invalid += int(metrics["invalid"])
            size = ((r.results or {}).get("split_sizes") or {}).get(split)
            if size is None and metrics.get("invalid_rate"):  # older results.json: back from the rate
                size = round(100.0 * metrics["invalid"] / metrics["invalid_rate"])
            total += int(size or 0)
    return invalid, total


def format_params(n: int | None) -> str:
    if not n:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K".replace(".0K", "K") if n < 100_000 else f"{round(n / 1e3)}K"
    return str(n)


class Notes:
    """Footnotes, numbered in order of first use; the same text gets the same mark."""

    def __init__(self):
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return chr(ord("a") + self.texts.index(text))


def _rank(values: dict) -> dict:
    """{key: 1 | 2} for the best and second-best (higher is better) of non-None values."""
    ordered = sorted({v for v in values.values() if v is not None}, reverse=True)
    out = {}
    for key, v in values.items():
        if v is None:
            continue
        rounded = round(v, 1)
        if ordered and rounded == round(ordered[0], 1):
            out[key] = 1
        elif len(ordered) > 1 and rounded == round(ordered[1], 1):
            out[key] = 2
    return out


def _fmt(value: float | None, std: float | None, rank: int | None, fmt: str, show_std: bool = True) -> str:
    if value is None:
        return "—"
    text = f"{value:.1f}"
    if show_std and std is not None and not math.isnan(std):
        text += f" ± {std:.1f}" if fmt == "md" else f"$_{{\\pm {std:.1f}}}$"
    if rank == 1:
        return f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
    if rank == 2:
        return f"<ins>{text}</ins>" if fmt == "md" else f"\\underline{{{text}}}"
    return text


def benchmark_table(cells: dict, layout, title: str, few_shot=None) -> dict:
    """Rows of one paper table as data: per backbone block, per method, per column (mean, std, n)."""
    notes = Notes()
    blocks = []
    backbones = list(dict.fromkeys(k[0] for k, c in cells.items() if k[3] == few_shot
                                   and any(k[2] == t for _, cols in layout for t, _, _ in cols)))
    for bb in backbones:
        methods = [m for m in METHOD_ORDER + sorted({k[1] for k in cells} - set(METHOD_ORDER))
                   if any(k[0] == bb and k[1] == m and k[3] == few_shot for k in cells)]
        rows = {m: {"params": None, "cols": {}, "avg": {}} for m in methods}
        for bench, cols in layout:
            for task, header, _ in cols:
                for m in methods:
                    cell = cells.get((bb, m, task, few_shot))
                    entry = {"mean": None, "std": None, "n": 0, "note": None, "seeds": [], "steps": None}
                    if cell is None:
                        if not any(k[0] == bb and k[2] == task and k[3] == few_shot for k in cells):
                            entry["note"] = notes.mark("no finished run for this task (its data is missing "
                                                       "here, or it was not in the runs given)")
                        else:
                            entry["note"] = notes.mark("no finished run of this method on this task (failed, "
                                                       "not finished yet, or not in the runs given)")
                    elif cell.mixed:
                        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in cell.mixed.items())
                        entry["note"] = notes.mark(f"{header} / {METHOD_NAMES.get(m, m)}: runs differ in more than "
                                                   f"the seed ({what}); not averaged")
                        entry["mixed"] = True
                    else:
                        entry.update(mean=cell.mean, std=cell.std if len(cell.scores) > 1 else None,
                                     n=len(cell.scores), seeds=sorted(r.seed for r in cell.runs),
                                     steps=cell.runs[0].config["steps"])
                        if len(cell.scores) == 1:
                            entry["note"] = notes.mark("one seed only (no std)")
                        rows[m]["params"] = rows[m]["params"] or cell.runs[0].results.get("trainable_params")
                        _search_and_invalid(entry, cell, notes)
                    rows[m]["cols"][task] = entry
            # Avg over the tasks every method of the block has: a method is not ranked on easier tasks.
            common = [(t, h) for t, h, _ in cols if all(rows[m]["cols"][t]["mean"] is not None for m in methods)]
            for m in methods:
                present = [rows[m]["cols"][t]["mean"] for t, _ in common]
                rows[m]["avg"][bench] = {"mean": sum(present) / len(present) if present else None,
                                         "n_tasks": len(present), "of": len(cols), "tasks": [h for _, h in common]}
        blocks.append({"backbone": bb, "methods": methods, "rows": rows})
    return {"title": title, "layout": layout, "blocks": blocks, "notes": notes.texts, "few_shot": few_shot}


LR_NOTE = ("learning rate searched (Appendix B.2): the lr with the best mean validation score is reported; "
           "the winners are listed below")
INVALID_NOTE = "some test outputs were invalid generations (no label word; scored as wrong): counts below"


def scoring_of(run: RunRecord) -> str:
    """How a run's predictions were scored: its eval_mode, except a prompt on a sentence-pair task
    on an encoder scored siamese (each side pooled apart, then the cosine pair head), where no
    eval_mode applies. The rule is the one training used (`ept.tasks.spec.siamese_applies`)."""
    from ept.backbone_specs import offline_kind
    from ept.method_configs import METHODS
    from ept.tasks.spec import siamese_applies

    mode = str(run.config.get("eval_mode") or "default")
    if run.method not in METHODS or not METHODS.get(run.method).config_cls.has_prompt:
        return mode
    try:
        spec = run.spec
    except (KeyError, ValueError):  # a task this install does not know: its eval_mode is all we can say
        return mode
    if siamese_applies(offline_kind(run.config["backbone"]), spec, run.config.get("pair_encoding")):
        return f"siamese cosine ({run.config.get('pair_head') or 'trainable'} pair head)"
    return mode


def _search_and_invalid(entry: dict, cell: Cell, notes: Notes) -> None:
    """Put the lr search's winner and the invalid-generation count of a cell into its entry."""
    entry["invalid"], entry["predictions"] = invalid_count(cell.runs)
    entry["eval_modes"] = sorted({scoring_of(r) for r in cell.runs})
    marks = []
    if cell.search:
        entry["lr"], entry["lr_validation"] = cell.search["chosen"], cell.search["validation"]
        marks.append(notes.mark(LR_NOTE))
    if entry["invalid"]:
        marks.append(notes.mark(INVALID_NOTE))
    samples = sorted({_train_files(r) for r in cell.runs if ((r.results or {}).get("train_data") or {}).get("complete") is False})
    if samples:
        marks.append(notes.mark(f"trained on a sample of the official training set: {', '.join(samples)}"))
    if marks:
        entry["note"] = ",".join(([entry["note"]] if entry["note"] else []) + marks)


def _detail_notes(table: dict) -> list[str]:
    """The footnotes' lists: which lr won where, how many generations were invalid, the scoring."""
    won, invalid, modes = [], [], set()
    for block in table["blocks"]:
        bb = BACKBONE_NAMES.get(block["backbone"], Path(block["backbone"]).name)
        for _, cols in table["layout"]:
            for task, header, _ in cols:
                for m in block["methods"]:
                    e = block["rows"][m]["cols"][task]
                    modes.update(e.get("eval_modes") or [])
                    where = f"{bb} {header} / {METHOD_NAMES.get(m, m)}"
                    if e.get("lr") is not None:
                        grid = ", ".join(f"{lr:g}: {v:.1f}" if v is not None else f"{lr:g}: —"
                                         for lr, v in e["lr_validation"].items())
                        won.append(f"{where} lr {e['lr']:g} (validation {grid})")
                    if e.get("invalid"):
                        rate = 100.0 * e["invalid"] / e["predictions"] if e["predictions"] else float("nan")
                        invalid.append(f"{where} {e['invalid']:,} of {e['predictions']:,} ({rate:.1f}%)")
    out = []
    if won:
        out.append("Learning rate chosen on validation (mean over seeds; test never chooses): " + "; ".join(won))
    if invalid:
        out.append("Invalid generations on test, summed over seeds: " + "; ".join(invalid))
    if modes:
        out.append("Scoring (eval_mode): " + ", ".join(sorted(modes)) + " (generate: the paper's greedy decoding; "
                   "rank/default: rank classification, never invalid; siamese cosine: each side of a pair pooled "
                   "apart, scored by the cosine pair head)")
    return out


def _ranks_for(block, layout) -> dict:
    """(method, column) -> 1 | 2, fine-tuning excluded as in the paper."""
    ranks = {}
    ranked = [m for m in block["methods"] if m != "ft"]
    for bench, cols in layout:
        for task, _, _ in cols:
            for m, r in _rank({m: block["rows"][m]["cols"][task]["mean"] for m in ranked}).items():
                ranks[(m, task)] = r
        for m, r in _rank({m: block["rows"][m]["avg"][bench]["mean"] for m in ranked}).items():
            ranks[(m, "avg:" + bench)] = r
    return ranks


def render(table: dict, fmt: str = "md") -> str:
    """Markdown (fmt="md") or LaTeX (fmt="tex") text of a table built by `benchmark_table`."""
    layout = table["layout"]
    head1 = ["Model", "Method", "Param/task"]
    head2 = ["", "", ""]
    for bench, cols in layout:
        head1 += [bench] + [""] * len(cols)
        head2 += [f"{h} ({metric})" for _, h, metric in cols] + ["Avg"]
    lines = []
    partial_avg = {}
    body = []
    for block in table["blocks"]:
        ranks = _ranks_for(block, layout)
        for i, m in enumerate(block["methods"]):
            row = block["rows"][m]
            cells = [BACKBONE_NAMES.get(block["backbone"], Path(block["backbone"]).name) if i == 0 else "",
                     METHOD_NAMES.get(m, m), format_params(row["params"])]
            for bench, cols in layout:
                for task, _, _ in cols:
                    e = row["cols"][task]
                    text = "mixed" if e.get("mixed") else _fmt(e["mean"], e["std"], ranks.get((m, task)), fmt)
                    if e["note"]:
                        text += f"$^{{{e['note']}}}$" if fmt == "tex" else f"<sup>{e['note']}</sup>"
                    cells.append(text)
                avg = row["avg"][bench]
                text = _fmt(avg["mean"], None, ranks.get((m, "avg:" + bench)), fmt, show_std=False)
                if avg["mean"] is not None and avg["n_tasks"] < avg["of"]:
                    partial_avg[bench] = avg["tasks"]
                    text += "$^{*}$" if fmt == "tex" else "<sup>*</sup>"
                cells.append(text)
            body.append(cells)
    notes = [f"{chr(ord('a') + i)}: {t}" for i, t in enumerate(table["notes"])]
    if partial_avg:
        notes.append("*: Avg over the tasks that every method has here, not the whole benchmark: " + "; ".join(
            f"{bench}: {', '.join(tasks)}" for bench, tasks in partial_avg.items()))
    notes += _detail_notes(table)
    notes.append("Test-set main metric of the best validation checkpoint, mean ± std over seeds; fine-tuning "
                 "excluded from the ranking: best **bold**, second <ins>underlined</ins>.")
    if fmt == "md":
        lines.append(f"**{table['title']}**\n")
        lines.append("| " + " | ".join(head1) + " |")
        lines.append("|" + " --- |" * len(head1))
        lines.append("| " + " | ".join(head2) + " |")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines.append("")
        lines += [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"
    tex = lambda s: s.replace("_", "\\_").replace("%", "\\%")  # noqa: E731
    lines.append("\\begin{table*}[t]\n\\centering\\small")
    lines.append("\\begin{tabular}{ll r" + "".join(" " + "c" * (len(cols) + 1) for _, cols in layout) + "}")
    lines.append("\\toprule")
    group = " & ".join(["", "", ""] + [f"\\multicolumn{{{len(cols) + 1}}}{{c}}{{{b}}}" for b, cols in layout])
    lines.append(group + " \\\\")
    lines.append(" & ".join(tex(h) for h in ["Model", "Method", "Param/task"] + head2[3:]) + " \\\\")
    lines.append("\\midrule")
    lines += [" & ".join(c if "$" in c or "\\" in c else tex(c) for c in r) + " \\\\" for r in body]
    lines.append("\\bottomrule\n\\end{tabular}")
    caption = tex(table["title"]) + ". " + " ".join(
        tex(n).replace("**bold**", "\\textbf{bold}").replace("<ins>underlined</ins>", "\\underline{underlined}")
        .replace("±", "$\\pm$") for n in notes)
    lines.append(f"\\caption{{{caption}}}\n\\end{{table*}}")
    return "\n".join(lines) + "\n"


def fewshot_table(cells: dict, title: str = "Table 3: few-shot") -> dict:
    """Table 3: per backbone, rows (benchmark, k), columns methods: mean over the benchmark's
    tasks of each (task, method, k) cell mean."""
    shots = sorted({k[3] for k in cells if k[3] is not None})
    out = []
    for bb in dict.fromkeys(k[0] for k in cells if k[3] is not None):
        methods = [m for m in METHOD_ORDER if any(k[0] == bb and k[1] == m and k[3] is not None for k in cells)]
        for bench, cols in TABLE1:
            for k in shots:
                vals, tasks, invalid = {}, [], {}
                for m in methods:
                    means = [cells[(bb, m, t, k)].mean for t, _, _ in cols if (bb, m, t, k) in cells]
                    means = [x for x in means if x is not None]
                    vals[m] = sum(means) / len(means) if means else None
                    tasks = [t for t, _, _ in cols if (bb, m, t, k) in cells] or tasks
                    counts = [invalid_count(cells[(bb, m, t, k)].runs) for t, _, _ in cols if (bb, m, t, k) in cells]
                    invalid[m] = [sum(c[0] for c in counts), sum(c[1] for c in counts)]
                if any(v is not None for v in vals.values()):
                    out.append({"backbone": bb, "benchmark": bench, "k": k, "values": vals, "tasks": tasks,
                                "invalid": invalid})
    return {"title": title, "rows": out}


def render_fewshot(table: dict, fmt: str = "md") -> str:
    methods = [m for m in METHOD_ORDER if any(m in r["values"] for r in table["rows"])]
    head = ["Model", "Benchmark", "k"] + [METHOD_NAMES[m] for m in methods]
    body = []
    for r in table["rows"]:
        ranks = _rank({m: r["values"].get(m) for m in methods if m != "ft"})
        body.append([BACKBONE_NAMES.get(r["backbone"], r["backbone"]), f"{r['benchmark']} ({', '.join(r['tasks'])})",
                     str(r["k"])] + [_fmt(r["values"].get(m), None, ranks.get(m), fmt, show_std=False) for m in methods])
    if fmt == "md":
        lines = [f"**{table['title']}**\n", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines.append("\n- Mean over the listed tasks of the per-task mean over seeds (test main metric).")
        invalid = [f"{BACKBONE_NAMES.get(r['backbone'], r['backbone'])} {r['benchmark']} k={r['k']} "
                   f"{METHOD_NAMES.get(m, m)} {n:,} of {total:,}"
                   for r in table["rows"] for m, (n, total) in r.get("invalid", {}).items() if n]
        if invalid:
            lines.append("- Invalid generations on test (no label word; scored as wrong), summed over tasks and "
                         "seeds: " + "; ".join(invalid))
        return "\n".join(lines) + "\n"
    lines = ["\\begin{table}[t]\n\\centering\\small", "\\begin{tabular}{lll" + "c" * len(methods) + "}", "\\toprule",
             " & ".join(head) + " \\\\", "\\midrule"]
    lines += [" & ".join(c.replace("_", "\\_") if "\\" not in c else c for c in r) + " \\\\" for r in body]
    lines += ["\\bottomrule\n\\end{tabular}", f"\\caption{{{table['title']}}}\n\\end{{table}}"]
    return "\n".join(lines) + "\n"


def runs_section(records: list[RunRecord], skipped: list[str]) -> str:
    """How many steps and seeds every task's numbers used (the report must say)."""
    lines = ["**Runs behind the numbers**\n", "| backbone | task | k | steps | batch | lr | max len | eval examples | methods | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict = {}
    for r in records:
        c = r.config
        key = (c["backbone"], r.task, c.get("few_shot"), c["steps"], c["batch_size"], c["lr"], c.get("max_length"),
               (r.results.get("split_sizes") or {}).get("test"))
        g = groups.setdefault(key, {"methods": set(), "seeds": set()})
        g["methods"].add(METHOD_NAMES.get(r.method, r.method))
        g["seeds"].add(r.seed)
    for key, g in groups.items():
        bb, task, k, steps, batch, lr, max_len, n_test = key
        lines.append(f"| {BACKBONE_NAMES.get(bb, Path(bb).name)} | {task} | {k or '—'} | {steps} | {batch} | {lr} | "
                     f"{max_len or 'task'} | {n_test} | {', '.join(sorted(g['methods']))} | "
                     f"{', '.join(map(str, sorted(g['seeds'])))} |")
    if skipped:
        lines.append("\nLeft out (not finished or failed): " + "; ".join(skipped))
    return "\n".join(lines) + "\n"


def own_tasks_layout(records: list[RunRecord]) -> list:
    """The layout of a table of the tasks outside Tables 1-2 (task files): one column per task,
    named by the task's name, its main metric as the label."""
    paper = {t for layout in (TABLE1, TABLE2) for _, cols in layout for t, _, _ in cols}
    metric = {r.task: r.main_metric or "main" for r in records if r.task not in paper}
    return [("Tasks", [(t, t, m) for t, m in metric.items()])] if metric else [("Tasks", [])]


def make_report(paths, out) -> dict:
    """Write table1/table2/table3 .md/.tex, report.md and report.json under `out`."""
    from ept.checkpoint import atomic_write_json, atomic_write_text

    records, skipped = load_records(paths)
    if not records:
        raise ValueError(f"no finished runs under {', '.join(map(str, paths))}" + (f"; left out: {'; '.join(skipped[:5])}" if skipped else ""))
    out = Path(out)
    cells = build_cells(records)
    written, parts, data = [], [], {}
    for name, layout, title in (("table1", TABLE1, "Table 1: GLUE and SuperGLUE"), ("table2", TABLE2, "Table 2: MRQA and Others"),
                                ("tasks", own_tasks_layout(records), "Other tasks (task files)")):
        tasks = {t for _, cols in layout for t, _, _ in cols}
        if not any(k[2] in tasks and k[3] is None for k in cells):
            continue
        table = benchmark_table(cells, layout, title)
        for fmt, ext in (("md", "md"), ("tex", "tex")):
            atomic_write_text(out / f"{name}.{ext}", render(table, fmt))
            written.append(str(out / f"{name}.{ext}"))
        parts.append(render(table, "md"))
        data[name] = {"blocks": table["blocks"], "notes": table["notes"]}
    if any(k[3] is not None for k in cells):
        table = fewshot_table(cells, "Table 3: few-shot (k examples per class)")
        for fmt, ext in (("md", "md"), ("tex", "tex")):
            atomic_write_text(out / f"table3.{ext}", render_fewshot(table, fmt))
            written.append(str(out / f"table3.{ext}"))
        parts.append(render_fewshot(table, "md"))
        data["table3"] = table["rows"]
    mixed = [f"{METHOD_NAMES.get(k[1], k[1])} on {k[2]} ({k[0]}): {c.mixed}" for k, c in cells.items() if c.mixed]
    parts.append(runs_section(records, skipped))
    atomic_write_text(out / "report.md", "\n".join(parts))
    atomic_write_json(out / "report.json", {"runs": [str(r.path) for r in records], "skipped": skipped,
                                            "mixed_cells": mixed, "tables": data})
    return {"written": written + [str(out / "report.md"), str(out / "report.json")], "mixed": mixed,
            "skipped": skipped, "runs": len(records)}
