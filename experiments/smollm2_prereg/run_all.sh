#!/usr/bin/env bash
# The whole preregistered SmolLM2 experiment, in its order (docs/preregistration-smollm2.md), from
# the repository root. Every step skips what is done, so on a new machine this continues from the
# committed run folders. Commit results/smollm2-prereg/ as it goes, never a half-written checkpoint:
#   nohup nice -n -5 experiments/smollm2_prereg/run_all.sh > experiment.log 2>&1 &
#   nohup python experiments/smollm2_prereg/commit_progress.py --every 600 > commit.log 2>&1 &
# The body is one function, read whole before it runs: bash reads a plain script line by line as it
# goes, so editing this file (a git pull) under a running copy would make it run the wrong lines.
set -euo pipefail

main() {
  export OMP_NUM_THREADS=1
  local D=experiments/smollm2_prereg W="${EPT_WORKERS:-2}"
  ept fetch smollm2-135m
  "$D/stage_a.sh" --prompts                       # zero-shot screen -> A/decision.json; 2 prompts; checks
  ept sweep "$D/B_lr_screen.yaml" --workers "$W"  # stage B
  python "$D/analyze.py"                          # -> B/decision.json once all 12 runs finished
  [ -f results/smollm2-prereg/B/decision.json ] || { echo "stage B unfinished"; return 1; }
  python "$D/make_specs.py"                       # C, D, E specs with B's lrs (never rewritten)
  for s in C_confirm D_sink E_rte; do ept sweep "$D/$s.yaml" --workers "$W"; done
  python "$D/analyze.py"
}

main "$@"
exit
