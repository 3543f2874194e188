#!/usr/bin/env bash
# Stage A of the preregistered SmolLM2 experiment (docs/preregistration-smollm2.md), forward only.
# Run from the repository root after `ept fetch smollm2-135m`. Each step skips what exists.
#   1. zero-shot validation accuracy: template {t5, natural} x label-score-EOS {true, false}
#   2. (after A_prompts.yaml trained) bf16 vs fp32 and the residual analysis of those prompts
set -euo pipefail
A=results/smollm2-prereg/A
mkdir -p "$A"
export OMP_NUM_THREADS=1
for t in t5 natural; do
  f="$A/zeroshot-validation-$t.json"
  [ -f "$f" ] || { ept eval --no-prompt --task sst2 --backbone smollm2-135m --split validation \
                     --max-eval-examples 500 --template "$t" --json > "$f.tmp" && mv "$f.tmp" "$f"; }
done
python experiments/smollm2_prereg/analyze.py --stage A
# the "no prompt" reference row of stage C: zero-shot test accuracy with the chosen template
f="$A/zeroshot-test.json"
eos=$(python -c "import json;print(str(json.load(open('$A/decision.json'))['label_score_eos']).lower())")
tpl=$(python -c "import json;print(json.load(open('$A/decision.json'))['template'])")
[ -f "$f" ] || { ept eval --no-prompt --task sst2 --backbone smollm2-135m --split test --template "$tpl" \
                   --label-score-eos "$eos" --json > "$f.tmp" && mv "$f.tmp" "$f"; }
[ "${1:-}" = "--prompts" ] || exit 0
ept sweep experiments/smollm2_prereg/A_prompts.yaml --workers 2
# bf16 needs fast bf16 hardware (AMX / AVX-512-BF16); elsewhere the check says so and is skipped
[ -f "$A/precision.json" ] || python experiments/smollm2_prereg/precision_check.py "$A"/prompts/*/ --rows 300 \
    --out "$A/precision.json" || echo "stage A precision check skipped on this machine"
[ -f "$A/residual/residual.csv" ] || ept analyze residual "$A"/prompts --split validation --max-examples 64 --out "$A/residual"
