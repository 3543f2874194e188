"""Run the five benchmarks of issue 6, one after another, each in its own process.

    python benchmarks/run_all.py                     # ~15 minutes on 2 busy CPU cores
    python benchmarks/run_all.py --only mixed eval   # a subset
    python benchmarks/run_all.py --quick             # fewer repetitions (a smoke run, noisier)
    make bench

Each benchmark prints its machine line and a table with the ratio and the target (--log FILE keeps
a copy); benchmarks/RESULTS.md holds a reviewed copy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "train_step": ["bench_train_step.py"],
    "vs_peft": ["bench_vs_peft.py"],
    "eval": ["bench_eval.py"],
    "mixed": ["bench_mixed.py"],
    "memory": ["bench_memory.py"],
}
QUICK = {"train_step": ["--reps", "2", "--batches", "3"], "vs_peft": ["--reps", "2", "--batches", "3"],
         "eval": ["--reps", "1", "--n-eval", "128"], "mixed": ["--reps", "1", "--batches", "2"], "memory": ["--tasks", "sst2"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--threads", default=None, help="torch threads for every benchmark (default: theirs, 1)")
    p.add_argument("--log", default=None, help="also write the output to this file")
    args = p.parse_args(argv)
    log = open(args.log, "w") if args.log else open(os.devnull, "w")
    failed = []
    for name in args.only:
        cmd = [sys.executable, str(HERE / BENCHMARKS[name][0]), *(QUICK[name] if args.quick else [])]
        if args.threads:
            cmd += ["--threads", args.threads]
        header = f"\n## {name}: {' '.join(Path(c).name if i == 1 else c for i, c in enumerate(cmd[1:], 1))}\n"
        print(header, flush=True)
        log.write(header)
        t = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if "Loading weights" in line or "USDT" in line:
                continue  # progress bars and profiler chatter
            print(line, end="", flush=True)
            log.write(line)
        if proc.wait() != 0:
            failed.append(name)
        footer = f"({name}: {time.time() - t:.0f} s, exit {proc.returncode})\n"
        print(footer, flush=True)
        log.write(footer)
    log.close()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
