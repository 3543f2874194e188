"""Where an analysis writes: one PNG, the numbers behind it as CSV, and a JSON summary.

Every analysis is two steps: a `*_rows` function computes its tidy rows (lists of flat dicts,
what the CSV/JSON files hold; no matplotlib), and a `draw_*` function turns those rows into a
figure. Figures are `matplotlib.figure.Figure` objects made without pyplot: no backend is chosen,
none forced over the user's, and nothing accumulates in pyplot's figure registry (a long
analysis session or a notebook keeps its own state).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ept.training.rundir import atomic_write_json, atomic_write_text


def figure(figsize: tuple[float, float], rows: int = 1, cols: int = 1, **kwargs):
    """(Figure, axes as a rows x cols array) without pyplot; kwargs go to `Figure` (e.g. layout)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **kwargs)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    """PNG at 120 dpi (Agg, whatever the user's backend). `tight=False` for constrained layouts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows of dicts as CSV; floats are written with full precision (numbers must match the runs)."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def write_json(path: Path, obj) -> Path:
    atomic_write_json(Path(path), obj)
    return Path(path)


def label(run) -> str:
    """task/method/s<seed> of a RunRecord or of a row that has those keys."""
    if isinstance(run, dict):
        return f"{run['task']}/{run['method']}/s{run['seed']}"
    return f"{run.task}/{run.method}/s{run.seed}"
