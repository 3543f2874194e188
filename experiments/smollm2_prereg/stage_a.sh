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
[ "${1:-}" = "--prompts" ] || exit 0
ept sweep experiments/smollm2_prereg/A_prompts.yaml --workers 2
for run in "$A"/prompts/*/; do
  name=$(basename "$run")
  for p in fp32 bf16; do
    f="$A/precision-$name-$p.json"
    [ -f "$f" ] || { ept eval "$run" --split validation --max-eval-examples 300 --precision "$p" --json > "$f.tmp" \
                       && mv "$f.tmp" "$f"; }
  done
done
ept analyze residual "$A"/prompts --split validation --max-examples 64 --out "$A/residual"
