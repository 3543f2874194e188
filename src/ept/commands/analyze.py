"""`ept analyze NAME RUNS... --out DIR`: one analysis of the paper over run folders.

    ept analyze norms /work/runs-cpu/main --out docs/figures
    ept analyze similarity /work/runs-cpu/main/sst2-ptuning-s0 /work/runs-cpu/main/sst2-pt-s0 --out figs
    ept analyze concat /work/runs-cpu/main/sst2-*-s0 --out figs --token 0 --max-examples 100
    ept analyze ablation /work/runs-cpu/ablation /work/runs-cpu/main --out figs
    ept analyze transfer /work/runs-cpu/main --method ept_star --out figs

RUNS are run folders (config.json) or folders of runs (a sweep root); runs that failed or have
not finished are left out and listed in NAME.provenance.json. Each analysis writes NAME.png and
the numbers behind it (NAME.csv, NAME*.csv, NAME.json).
"""

from __future__ import annotations

import argparse

NAMES = ("norms", "similarity", "concat", "hidden", "broadcast", "lr", "ablation", "init", "neighbors", "transfer")


def register(sub) -> None:
    p = sub.add_parser("analyze", help="figures and numbers of the paper's analyses", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help=f"one of: {', '.join(NAMES)}")
    p.add_argument("runs", nargs="+", help="run folders or sweep roots")
    p.add_argument("--out", required=True, help="folder for the PNG, CSV and JSON")
    p.add_argument("--split", choices=["validation", "test"], help="split scored (default: test for sweeps, validation for concat)")
    p.add_argument("--max-examples", type=int, help="concat/transfer: cap the split (default: the run's max_eval_examples)")
    p.add_argument("--data-dir", help="concat/transfer: task data (default: the run's)")
    p.add_argument("--token", type=int, help="concat: index i of the prompt token P_i to repeat (default 0)")
    p.add_argument("--lengths", help="concat: lengths l, '1-10' or '1,2,5' (default 1-10)")
    p.add_argument("--method", help="transfer: method whose prompts are transferred (default ept_star)")
    p.add_argument("--normalize", choices=["target", "source"],
                   help="transfer: divide A->B by B's own score (target, default) or by A's own score (source)")
    p.add_argument("--top-k", type=int, help="neighbors: tokens per prompt vector (default 5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.analysis import run_analysis

    summary = run_analysis(args.name, args.runs, args.out, split=args.split, max_examples=args.max_examples,
                           data_dir=args.data_dir, token=args.token, lengths=args.lengths, method=args.method,
                           normalize=args.normalize, top_k=args.top_k)
    print(f"ept analyze {summary['analysis']}: {len(summary['runs'])} runs -> {args.out}")
    for key, value in summary["written"].items():
        print(f"  {key}: {value}")
    if summary["skipped"]:
        print(f"  skipped {len(summary['skipped'])} run(s): " + "; ".join(summary["skipped"][:5]))
    return 0
