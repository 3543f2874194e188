"""Where an analysis writes: one PNG, the numbers behind it as CSV, and a JSON summary.

Matplotlib runs on the Agg backend (no display) unless the user picked another; figures are closed after saving so a long
analysis session does not accumulate them.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from ept.checkpoint import atomic_write_json, atomic_write_text


def pyplot():
    """matplotlib.pyplot, on the file-only Agg backend unless the user chose one ($MPLBACKEND or
    an earlier `matplotlib.use`): analyses write files, and a GUI backend on a headless machine
    fails. Chosen once, never forced over the user's choice."""
    import os

    import matplotlib

    if "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
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


def label(record) -> str:
    return f"{record.task}/{record.method}/s{record.seed}"
