"""Commit the experiment's run folders while it runs, never a half-written checkpoint.

    python experiments/smollm2_prereg/commit_progress.py             # once
    python experiments/smollm2_prereg/commit_progress.py --every 600 # every 10 minutes, until killed

A run's last/ is four files replaced one after the other, so `git add` can catch a checkpoint half
written: one step's weights beside another step's optimizer. last/state.json records the digests of
the files it was written with (`ept.training.checkpointer.check_last`): this stages the results
folder, checks every staged checkpoint against its staged state.json (reading the index, not the
working tree, which may have moved on), and commits only when all agree; otherwise it unstages
and tries again a little later. Only the results folder and the stage specs that make_specs.py
writes (C_confirm.yaml, D_sink.yaml, E_rte.yaml: committed with, or before, their first results) are
staged and committed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ept.checkpoint import CheckpointError
from ept.training.checkpointer import check_last

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "results/smollm2-prereg"
# What this commits: the results and the specs make_specs.py writes once B ends (never edited after).
PATHS = [RESULTS, *(f"experiments/smollm2_prereg/{name}.yaml" for name in ("C_confirm", "D_sink", "E_rte"))]


def git(*args: str, data: bool = False):
    out = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True)
    return out.stdout if data else out.stdout.decode()


def staged_checkpoints_agree() -> list[str]:
    """The staged runs' "name: step N" (raises CheckpointError if a staged checkpoint is mixed)."""
    progress = []
    for state_path in git("ls-files", "--cached", f"{RESULTS}/*/last/state.json").split():
        run = Path(state_path).parent.parent
        state = json.loads(git("show", f":{state_path}", data=True))
        check_last(run, state, "wait for the next checkpoint", read=lambda name: git("show", f":{run / name}", data=True))
        progress.append(f"{run.name}: step {state['step']}")
    return progress


def commit_once() -> bool:
    present = [p for p in PATHS if (ROOT / p).exists()]
    git("add", "-A", "--", *present)
    if not git("diff", "--cached", "--name-only", "--", *present).strip():
        return False
    try:
        progress = staged_checkpoints_agree()
    except (CheckpointError, subprocess.CalledProcessError) as err:
        git("reset", "-q", "--", *present)
        print(f"commit_progress: not now ({err})", file=sys.stderr)
        return False
    staged = git("diff", "--cached", "--name-only", "--", *present).split()
    changed = sorted({Path(p).parts[2] + "/" + Path(p).parts[3] for p in staged if p.startswith(RESULTS) and len(Path(p).parts) > 4}
                     | {Path(p).name for p in staged if p.endswith(".yaml")})
    git("commit", "-q", "-m", f"results: smollm2-prereg progress ({', '.join(changed) or 'reports'})",
        "-m", "\n".join(progress))
    print(f"commit_progress: committed {', '.join(changed) or 'reports'}")
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=float, help="seconds between attempts (default: once)")
    args = p.parse_args(argv)
    while True:
        try:
            commit_once()
        except subprocess.CalledProcessError as err:  # another git command holds the index: next time
            print(f"commit_progress: git failed ({err.stderr.decode().strip()[:200]})", file=sys.stderr)
        if not args.every:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
