"""Analyses of the EPT paper over run folders; each writes a PNG plus the numbers behind it.

    from ept.analysis import run_analysis
    run_analysis("norms", ["/work/runs-cpu/main"], out="docs/figures")

| name      | paper            | reads                                   |
| --------- | ---------------- | --------------------------------------- |
| norms     | Fig. 2, 11       | steps.jsonl (mu_t), eval.jsonl          |
| similarity| Fig. 3           | export/ prompt                          |
| concat    | Fig. 4           | best/ state, evaluates (no training)    |
| hidden    | Fig. 5, 12       | results.json of an h sweep              |
| broadcast | Fig. 7           | results.json of an n sweep              |
| lr        | Fig. 8           | results.json of an lr sweep             |
| ablation  | Fig. 9           | results.json (+ final mu_t)             |
| init      | Table 6          | results.json of an init sweep           |
| neighbors | Appendix A.1     | export/ prompt + embedding table        |
| transfer  | Fig. 10          | best/ state, evaluates on other tasks   |
| residual  | (issue 19)       | best/ state, forward with layer hooks   |

Each analysis is registered once below with the options it accepts; passing another option is
an error naming the allowed ones (no silent settings).

Each is three functions: `<name>_rows(records, ...)` computes the tidy rows (what the CSV/JSON
files hold, no matplotlib), `draw_<name>(rows, ...)` turns them into a `matplotlib.figure.Figure`
(made without pyplot: the user's backend is never touched), and `<name>(records, out, ...)`,
registered here, writes both. To restyle a figure, call `draw_*` on the rows (or the CSVs).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ept.analysis.output import write_json
from ept.analysis.runs import load_records
from ept.registry import Registry


@dataclass(frozen=True)
class Analysis:
    name: str
    func: Callable | str  # a function, or "module:function" under ept.analysis, imported when run
    summary: str
    options: tuple[str, ...] = ()

    def resolve(self) -> Callable:
        # Named as a string so that listing analyses (`ept ls`, `ept analyze --help`) does not
        # import torch (2-3 s) through the analyses that run a model.
        if callable(self.func):
            return self.func
        module, _, attr = self.func.partition(":")
        return getattr(importlib.import_module(f"ept.analysis.{module}"), attr)


ANALYSES: Registry[Analysis] = Registry("analysis")


def register_analysis(name: str, func: Callable | str, summary: str, options: tuple[str, ...] = ()) -> None:
    ANALYSES.register(name, Analysis(name, func, summary, options))


_SCORE = ("split",)
_EVAL = ("split", "max_examples", "data_dir")
register_analysis("norms", "curves:norms", "mu_t per step beside the validation score (Fig. 2, 11)")
register_analysis("similarity", "geometry:similarity", "cosine heatmap between prompt tokens (Fig. 3)")
register_analysis("concat", "swaps:concat", "token P_i repeated l=1..10 times, no training (Fig. 4)",
                  _EVAL + ("token", "lengths"))
register_analysis("hidden", "curves:hidden", "score vs EPT hidden size h (Fig. 5, 12)", _SCORE)
register_analysis("broadcast", "curves:broadcast", "score vs broadcast length n (Fig. 7)", _SCORE)
register_analysis("lr", "curves:lr", "score vs learning rate per method (Fig. 8)", _SCORE)
register_analysis("ablation", "curves:ablation", "EPT + LayerNorm/residual/activations, norm vs score (Fig. 9)", _SCORE)
register_analysis("init", "curves:init", "uniform / vocab / label initialisation (Table 6)", _SCORE)
register_analysis("neighbors", "geometry:neighbors", "nearest vocabulary tokens of each prompt token (App. A.1)",
                  ("top_k",))
register_analysis("residual", "residual:residual", "per-layer residual/update norms at prompt vs input positions",
                  ("split", "max_examples", "data_dir"))
register_analysis("transfer", "swaps:transfer", "zero-shot transfer matrix and task similarity (Fig. 10)",
                  _EVAL + ("method", "normalize"))


def run_analysis(name: str, runs, out, **options) -> dict:
    """Run analysis `name` on run folders / sweep roots `runs`, writing into `out`.
    Options left at None are dropped; an option the analysis does not take raises."""
    analysis = ANALYSES.get(name)
    given = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(given) - set(analysis.options))
    if bad:
        allowed = ", ".join(analysis.options) or "none"
        raise ValueError(f"analysis {analysis.name!r} takes no option(s) {', '.join(bad)}; allowed: {allowed}")
    records, skipped = load_records(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = analysis.resolve()(records, out, **given)
    summary = {"analysis": analysis.name, "runs": [str(r.path) for r in records], "skipped": skipped,
               "options": given, "written": written}
    write_json(out / f"{analysis.name}.provenance.json", summary)
    return summary


__all__ = ["ANALYSES", "Analysis", "register_analysis", "run_analysis", "load_records"]
