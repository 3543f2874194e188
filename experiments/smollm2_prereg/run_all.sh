#!/usr/bin/env bash
# The whole preregistered SmolLM2 experiment, in its order (docs/preregistration-smollm2.md), from
# the repository root. Every step skips what is done, so on a new machine this continues from the
# committed run folders. Commit results/smollm2-prereg/ as it goes, never a half-written checkpoint:
#   nohup nice -n -5 experiments/smollm2_prereg/run_all.sh > experiment.log 2>&1 &
#   nohup python experiments/smollm2_prereg/commit_progress.py --every 600 > commit.log 2>&1 &
set -euo pipefail
export OMP_NUM_THREADS=1
D=experiments/smollm2_prereg
ept fetch smollm2-135m
"$D/stage_a.sh" --prompts                         # zero-shot screen -> A/decision.json; 2 prompts; checks
ept sweep "$D/B_lr_screen.yaml" --workers "${EPT_WORKERS:-2}"   # stage B
python "$D/analyze.py"                            # -> B/decision.json once all 12 runs finished
[ -f results/smollm2-prereg/B/decision.json ] || { echo "stage B unfinished"; exit 1; }
python "$D/make_specs.py"                         # C, D, E specs with B's lrs (never rewritten)
for s in C_confirm D_sink E_rte; do ept sweep "$D/$s.yaml" --workers "${EPT_WORKERS:-2}"; done
python "$D/analyze.py"
