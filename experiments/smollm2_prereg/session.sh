#!/usr/bin/env bash
# Start, watch and stop the preregistered experiment on a machine that is lent for a while (a work
# session): the experiment outlives it, so each session continues from the committed run folders.
#   experiments/smollm2_prereg/session.sh start    run_all.sh + the progress committer, in the background
#   experiments/smollm2_prereg/session.sh status   what runs, and the generated status of the doc
#   experiments/smollm2_prereg/session.sh stop     stop both, losing no step; commit what is done
# `stop` sends SIGTERM to run_all.sh's process group: each training run ends its step, writes last/
# at it and exits (ept.training.stopping; a run in its validation pass ends that first, a minute or
# two), then the committer runs once and the analysis regenerates the doc's status.
# Never `git stash` or check out in this working tree while it runs: that replaces the files the
# runs are writing (see the preregistration's change log, 2026-12-03).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=experiments/smollm2_prereg
LOGS=${EPT_SESSION_LOGS:-..}  # outside the repository: the logs are not results

pids() { pgrep -f "$1" || true; }

case "${1:-}" in
start)
  [ -z "$(pids "$D/run_all.sh")" ] || { echo "run_all.sh already runs: $(pids "$D/run_all.sh")"; exit 1; }
  python -c "import torch, ept" 2>/dev/null || make setup
  # Linux groups CPU time by session (autogroup): a process's nice ranks it only inside its own
  # session, and every session gets an equal share. So `nice` does not put the experiment before a
  # test run started from another terminal (measured: a nice-19 job in its own session halved the
  # experiment's pace); the session's autogroup nice does. Raising priority needs root. The new
  # session sets its own (/proc/self, after setsid): written from here through $!, it raced setsid
  # and once raised this shell's group while the experiment's stayed at 0.
  setsid nohup bash -c 'echo -10 > /proc/self/autogroup 2>/dev/null; exec "$0"' "$D/run_all.sh" \
    > "$LOGS/experiment.log" 2>&1 < /dev/null &
  setsid nohup python "$D/commit_progress.py" --every 600 > "$LOGS/commit_progress.log" 2>&1 < /dev/null &
  sleep 1
  for pid in $(pids "$D/run_all.sh"); do echo "run_all.sh $pid: $(cat "/proc/$pid/autogroup" 2>/dev/null)"; done
  echo "started: run_all.sh (log $LOGS/experiment.log), commit_progress.py --every 600 (log $LOGS/commit_progress.log)" ;;
status)
  echo "run_all.sh: $(pids "$D/run_all.sh" | tr '\n' ' ')| committer: $(pids "$D/commit_progress.py" | tr '\n' ' ')"
  for s in C_confirm D_sink E_rte; do echo "$s: $(ept sweep "$D/$s.yaml" --dry-run --no-data-check --workers "${EPT_WORKERS:-2}" 2>/dev/null | tail -2 | tr "\n" " ")"; done
  echo "docs/results-smollm2.md, as of its last analysis:"
  sed -n '/BEGIN status/,/END status/p' docs/results-smollm2.md | grep -E '^\| [A-E] |^Left' || true ;;
stop)
  for p in $(pids "$D/commit_progress.py"); do kill "$p" 2>/dev/null || true; done
  for p in $(pids "$D/run_all.sh"); do kill -TERM -- "-$(ps -o pgid= -p "$p" | tr -d ' ')" 2>/dev/null || true; done
  for _ in $(seq 600); do  # the workers end their step (or validation pass) and checkpoint it
    [ -z "$(pids 'ept sweep')$(pids 'multiprocessing.spawn')$(pids 'lm_eval_check')" ] && break
    sleep 1
  done
  [ -z "$(pids 'multiprocessing.spawn')" ] || echo "warning: workers still run after 10 minutes: $(pids 'multiprocessing.spawn')"
  python "$D/analyze.py" > /dev/null
  python "$D/commit_progress.py"
  git add docs/results-smollm2.md && git commit -q -m "results: smollm2-prereg status at a session's stop" || true
  git status --short | head ;;
*)
  echo "usage: $0 start | status | stop"; exit 2 ;;
esac
