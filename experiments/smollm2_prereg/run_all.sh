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
  # A client nobody here wrote checks the verdict's numbers once C is whole: lm-evaluation-harness
  # scores every C run's PEFT export on all 872 test rows, against the run's recorded predictions.
  # Last, so that no stage waits on it; each run's check is kept as it ends (a rerun goes on).
  if python -c "import glob, json, sys; sys.exit(sum(json.load(open(p)).get('status') == 'finished'
                for p in glob.glob('results/smollm2-prereg/C/*/results.json')) != 15)"; then
    python -c "import lm_eval" 2>/dev/null || { echo "lm_eval missing (pip install -e .[crosscheck]): no outside check"; return 0; }
    OMP_NUM_THREADS="$W" python experiments/crosscheck/lm_eval_check.py results/smollm2-prereg/C/sst2-* \
      --rows 872 --no-frozen --no-noise-floor --out results/smollm2-prereg/C/lm-eval
    python "$D/analyze.py"
  fi
}

main "$@"
exit
