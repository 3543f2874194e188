"""`ept sweep`: expand a grid spec into `ept train` runs and run what is not finished.

    ept sweep experiments/cpu/table1_main.yaml --workers 2
    ept sweep experiments/cpu/table1_main.yaml --dry-run             # list runs and their state
    ept sweep experiments/cpu/fig8_lr.yaml --out /tmp/lr --workers 1   # another root
    ept sweep experiments/paper/table1_t5base.yaml --executor ray --address auto --gpus-per-run 1

The whole spec is validated before any run starts (unknown keys, tasks, methods, method switches,
tasks without data here) and every problem is listed at once. Finished runs are skipped; failed
runs are reported and skipped unless --retry-failed; killed runs resume from their checkpoint.
With Ray, ept must be installed on every node and `out` must be on a shared filesystem.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of train runs (local pool or Ray)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="sweep spec YAML (fixed TrainConfig keys + grid + out)")
    p.add_argument("--out", help="sweep root (overrides the spec's `out`)")
    p.add_argument("--workers", type=int, default=1, help="local processes; each uses cores // workers threads")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--cpus-per-run", type=float, default=1, help="Ray: CPUs reserved per run")
    p.add_argument("--gpus-per-run", type=float, default=0, help="Ray: GPUs reserved per run")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs whose results.json says failed")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing")
    p.add_argument("--no-data-check", action="store_true", help="skip loading each task's data while validating")
    p.set_defaults(func=run)


def run(args) -> int:
    from collections import Counter

    from ept.sweep import execute, load_spec, pace, run_state

    sweep = load_spec(args.spec, out=args.out, check_data=not args.no_data_check)
    if args.dry_run:
        states = {r.name: run_state(r) for r in sweep.runs}
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in sweep.fixed.items()))
        print("grid:  " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in sweep.grid.items()))
        # what the folder names may not say: how each run is scored and its resolved lr
        by = Counter((r.config.get("eval_mode") or "default", r.config["lr"]) for r in sweep.runs)
        print("runs by eval_mode and lr: " + ", ".join(f"{m} lr={lr:g}: {n}" for (m, lr), n in sorted(by.items())))
        from ept.training.rundir import RunDir

        for r in sweep.runs:
            at = f"  (step {RunDir(r.config['out']).progress()['reached']} of {r.config['steps']})" \
                if states[r.name] in ("partial", "failed") else ""
            print(f"{states[r.name]:9s} {r.config['out']}{at}")
        summary = {s: sum(v == s for v in states.values()) for s in ("finished", "failed", "partial", "pending", "stale")}
        print(f"ept sweep: {len(sweep.runs)} runs | " + " | ".join(f"{k} {v}" for k, v in summary.items()))
        print(_pace_line(pace(sweep.runs, states), args.workers))
        return 0
    states = execute(sweep, workers=args.workers, executor=args.executor, address=args.address,
                     retry_failed=args.retry_failed, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                     log=lambda msg: print(msg, flush=True))
    failed = [n for n, s in states.items() if s == "failed"]
    unfinished = [n for n, s in states.items() if s in ("partial", "pending")]  # interrupted: resumes next time
    print(f"ept sweep: {sum(s == 'finished' for s in states.values())} finished, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else "")
          + (f"; {len(unfinished)} not finished (rerun the sweep to resume them)" if unfinished else ""), flush=True)
    return 1 if failed or unfinished else 0


def _pace_line(p, workers: int) -> str:
    line = f"steps left: {p.steps_left:,} of {p.steps_total:,}"
    if p.steps_left and p.seconds_per_step is not None:
        line += (f"; the finished runs took a median {p.seconds_per_step:.2f} s a step ({p.timed_runs} runs, on the "
                 f"machines their env.json names): about {p.hours(workers):.1f} h at --workers {workers}")
    return line
