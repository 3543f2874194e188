"""`ept report RUNS_OR_SWEEP... --out DIR`: the paper's result tables from run folders.

    ept report /work/runs-cpu/main --out docs/tables
    ept report runs/t5-base runs/t5-large --out tables      # one block of rows per backbone

Writes table1.md/.tex (GLUE + SuperGLUE, Avg, Param/task), table2.md/.tex (MRQA + Others) and
table3.md/.tex (few-shot runs) for the tasks that have runs, report.md (all tables plus the steps
and seeds behind every number) and report.json. Cells are test main metrics, mean ± std over
seeds; best bold, second underlined (fine-tuning excluded, as in the paper); "—" with a footnote
where a task has no run. Runs of one cell at several learning rates are an lr search (Appendix
B.2): the lr with the best mean validation score is kept, its test scores reported, and the notes
name it. Runs of one cell that differ in more than the seed and lr (e.g. step counts) are not
averaged: the cell says "mixed" and the command exits with status 1. Invalid generations
(results.json `invalid`) are footnoted.
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("report", help="paper-style tables (Markdown + LaTeX) from runs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders or sweep roots")
    p.add_argument("--out", required=True, help="folder for the tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.report import make_report

    result = make_report(args.runs, args.out)
    print(f"ept report: {result['runs']} runs -> {args.out}")
    for path in result["written"]:
        print(f"  {path}")
    if result["skipped"]:
        print(f"  left out {len(result['skipped'])} unfinished/failed run(s): " + "; ".join(result["skipped"][:5]))
    if result["mixed"]:
        print("ept report: error: some cells hold runs that differ in more than the seed; they were not averaged "
              "(shown as 'mixed'):\n  " + "\n  ".join(result["mixed"]), file=sys.stderr)
        return 1
    return 0
