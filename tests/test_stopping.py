"""A SIGTERM or Ctrl-C ends a run at a step boundary with a checkpoint of that step
(`ept.training.stopping`): `ept train` and `ept sweep` lose no step, a sweep's worker takes no
further run, and the resumed run ends as the uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ept.training.recipe import TrainConfig, run
from ept.training.stopping import StopRequested, graceful_stop

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 60


def test_the_first_signal_sets_the_flag_a_second_acts_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with graceful_stop() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # signals are handled between bytecodes of the main thread
        assert flag.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM (a sweep's death sends its workers one): no effect
        time.sleep(0.01)
        assert flag.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal: Ctrl-C's usual KeyboardInterrupt at once
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with graceful_stop(enabled=False) as flag:  # a multi-process run keeps the default behaviour
        assert signal.getsignal(signal.SIGTERM) == before[1]
    err = StopRequested(signal.SIGTERM, 7)
    assert (err.name, err.exit_code, err.step) == ("SIGTERM", 143, 7) and isinstance(err, KeyboardInterrupt)


def _args(tiny_bert, data_dir, out) -> dict:
    return dict(task="sst2", method="ept", backbone=tiny_bert, steps=STEPS, eval_every=30, batch_size=8,
                max_eval_examples=48, max_length=32, data_dir=str(data_dir), out=str(out), tensorboard=False,
                group_by_length=True)


def _logged(out: Path) -> list[int]:
    path = out / "steps.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_steps(proc, out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and len(_logged(out)) < n:
        time.sleep(0.02)


@pytest.mark.integration
def test_sigterm_checkpoints_the_step_and_the_resumed_run_ends_the_same(tiny_bert, data_dir, tmp_path):
    """No checkpoint_every and an eval_every of 30: killed outright at step ~5, the run would go back
    to step 0. Stopped by SIGTERM it checkpoints the step it was in (mid length-group window too)."""
    metrics = ("best_step", "validation", "test", "final_mu_t")
    reference = run(TrainConfig(**_args(tiny_bert, data_dir, tmp_path / "ref")), progress=False)
    out = tmp_path / "stopped"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in _args(tiny_bert, data_dir, out).items()]
    proc = subprocess.Popen([sys.executable, "-m", "ept.cli", "train", *flags, "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(proc, out, 5)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert not (out / "results.json").exists(), "the run finished before the signal; make it longer"
    step = json.loads((out / "last" / "state.json").read_text())["step"]
    assert proc.returncode == 143 and 5 <= step < STEPS and step % 30 != 0
    assert _logged(out) == list(range(1, step + 1))  # every logged step is in the checkpoint
    assert (f"stopped (SIGTERM, at the end of a step); its last checkpoint is step {step} of {STEPS}: run the same "
            "command again to resume") in err and "Traceback" not in err
    resumed = run(TrainConfig(**_args(tiny_bert, data_dir, out)), progress=False)
    assert {k: resumed[k] for k in metrics} == {k: reference[k] for k in metrics}
    assert _logged(out) == list(range(1, STEPS + 1))


def _start_sweep(tiny_bert, data_dir, tmp_path, **popen):
    """A two-run sweep (EPT then PT, one worker) in a subprocess, returned once its first run logged
    5 steps: (process, spec path, first run's folder, second run's folder)."""
    spec = {k: v for k, v in _args(tiny_bert, data_dir, tmp_path / "out").items() if k != "method"}
    spec["grid"] = {"method": ["ept", "pt"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    first, second = tmp_path / "out" / "sst2-ept-s0", tmp_path / "out" / "sst2-pt-s0"
    proc = subprocess.Popen([sys.executable, "-m", "ept.cli", "sweep", str(path), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    _wait_for_steps(proc, first, 5)
    return proc, path, first, second


@pytest.mark.integration
def test_a_stopped_sweep_loses_no_step_and_its_worker_takes_no_further_run(tiny_bert, data_dir, tmp_path):
    """SIGTERM to the sweep's process group (what stopping a background sweep does): the running run
    checkpoints its step and is not recorded as failed; the queued run is not started by the
    worker; the next sweep resumes the one and runs the other."""
    proc, path, first, second = _start_sweep(tiny_bert, data_dir, tmp_path, start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    deadline = time.time() + 60  # the worker outlives the sweep's parent by a step and a checkpoint
    while time.time() < deadline and (first / ".owner.json").exists():
        time.sleep(0.05)
    assert not (first / "results.json").exists(), "the run finished before the signal; make it longer"
    step = json.loads((first / "last" / "state.json").read_text())["step"]
    assert _logged(first) == list(range(1, step + 1)) and step >= 5
    assert not second.exists()
    from ept.cli import main

    assert main(["sweep", str(path), "--workers", "1"]) == 0
    assert all(json.loads((d / "results.json").read_text())["status"] == "finished" for d in (first, second))
    assert _logged(first) == list(range(1, STEPS + 1))


@pytest.mark.integration
def test_a_worker_stopped_alone_checkpoints_and_takes_no_queued_run(tiny_bert, data_dir, tmp_path):
    """SIGTERM to one worker only (a cluster preempting it): its run checkpoints its step and the
    worker ends instead of starting the run queued behind it; the sweep reports the worker's end,
    and the next sweep resumes the one run and runs the other."""
    proc, path, first, second = _start_sweep(tiny_bert, data_dir, tmp_path)
    worker = json.loads((first / ".owner.json").read_text())["pid"]  # the run folder's writer
    assert worker != proc.pid
    os.kill(worker, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert "stopped by SIGTERM at step" in out and "exiting this worker" in out
    assert not (first / "results.json").exists(), "the run finished before the signal; make it longer"
    step = json.loads((first / "last" / "state.json").read_text())["step"]
    assert _logged(first) == list(range(1, step + 1)) and step >= 5
    assert not second.exists()
    # the sweep says so, and neither run is called failed (nothing on disk says it failed)
    assert f"sst2-ept-s0: interrupted, not failed: a worker process ended (a stop signal, or killed: out of memory?); " \
           f"the next sweep resumes it from step {step}" in out
    assert "FAILED" not in out and proc.returncode == 1
    assert "0 finished, 0 failed; 2 not finished (rerun the sweep to resume them)" in out
    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert sorted(r["state"] for r in manifest["runs"]) == ["partial", "pending"]
    from ept.cli import main

    assert main(["sweep", str(path), "--workers", "1"]) == 0
    assert all(json.loads((d / "results.json").read_text())["status"] == "finished" for d in (first, second))
