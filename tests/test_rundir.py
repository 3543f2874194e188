"""Run folders you can trust (issue 14): run identity, one writer, validated checkpoints, torn
logs; and the trainer defaults of issue 10 (lr schedule, clipping, no decay on norms and biases)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import dataclasses
from pathlib import Path

import pytest
import torch

import ept.training.recipe as train_mod
from ept.checkpoint import CheckpointError
from ept.method_configs import EPTConfig
from ept.training.rundir import RunDir, RunDirError, RunLockedError, StaleRunError, atomic_write_text, read_jsonl
from ept.training.recipe import TrainConfig, run

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tiny_bert, data, out, **kw):
    base = dict(task="sst2", method="ept", backbone=tiny_bert, steps=8, eval_every=4, batch_size=8,
                max_eval_examples=16, max_length=32, data_dir=str(data), out=str(out), tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(results):
    return {k: results[k] for k in ("best_step", "validation", "test", "final_mu_t")}


@pytest.fixture(scope="module")
def finished(tiny_bert, mini_data, tmp_path_factory):
    """A finished 8-step run (never modified by the tests that share it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, run(_cfg(tiny_bert, mini_data, out), progress=False)


def _interrupted(tiny_bert, mini_data, out, monkeypatch, fail_at: int = 6, **kw):
    """A run that died during step `fail_at` (last/ and best/ at step 4, steps.jsonl 1..fail_at-1)."""
    calls = {"n": 0}
    real = train_mod.train_step

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt  # stands in for a kill
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny_bert, mini_data, out, **kw), progress=False)
    monkeypatch.setattr(train_mod, "train_step", real)
    assert RunDir(out).start_step() == 4 and not RunDir(out).results_path.exists()


# ------------------------------------------------------------------------------ identity
def test_finished_run_same_config_is_skipped_any_spelling(tiny_bert, mini_data, finished, monkeypatch, capsys):
    out, results = finished
    stamp = (out / "results.json").stat().st_mtime_ns
    monkeypatch.chdir(out.parent)
    for spelling in (str(out), str(out) + "/", "./run", "run/../run"):
        assert run(_cfg(tiny_bert, mini_data, spelling, tensorboard=True), progress=False) == results
        assert "already finished (same config)" in capsys.readouterr().out
    assert (out / "results.json").stat().st_mtime_ns == stamp
    assert results["config_hash"] == json.loads((out / "results.json").read_text())["config_hash"]


def test_finished_run_other_config_is_refused_naming_the_keys(tiny_bert, mini_data, finished):
    out, _ = finished
    with pytest.raises(StaleRunError) as err:
        run(_cfg(tiny_bert, mini_data, out, steps=12, lr_scheduler="linear"), progress=False)
    msg = str(err.value)
    assert "steps: 8 -> 12" in msg and "lr_scheduler: 'constant' -> 'linear'" in msg
    assert "--out" in msg and "--overwrite" in msg
    assert "max_length" not in msg  # only the keys that differ


def test_overwrite_replaces_a_run_of_another_config(tiny_bert, mini_data, tmp_path):
    out = tmp_path / "run"
    run(_cfg(tiny_bert, mini_data, out, steps=4), progress=False)
    results = run(_cfg(tiny_bert, mini_data, out, steps=8, overwrite=True), progress=False)
    assert results["status"] == "finished" and results["steps"] == 8
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == list(range(1, 9))
    assert json.loads((out / "config.json").read_text())["steps"] == 8


def test_sweep_with_a_changed_fixed_key_is_refused(tiny_bert, mini_data, tmp_path, capsys):
    from ept.cli import main
    from ept.sweep import SweepError, execute, expand, run_state

    spec = {"out": str(tmp_path / "sw"), "task": "sst2", "method": "ept", "backbone": tiny_bert, "steps": 4,
            "eval_every": 2, "batch_size": 8, "max_eval_examples": 16, "max_length": 32,
            "data_dir": str(mini_data), "tensorboard": False, "grid": {"seed": [0]}}
    sweep = expand(spec)
    run(TrainConfig.from_dict(sweep.runs[0].config), progress=False)
    assert run_state(sweep.runs[0]) == "finished"
    changed = expand({**spec, "steps": 6})
    assert run_state(changed.runs[0]) == "stale"
    with pytest.raises(SweepError, match=r"(?s)steps: 4 -> 6.*overwrite: true"):
        execute(changed, log=lambda m: None)
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "steps": 6}))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "stale" in capsys.readouterr().out
    assert main(["sweep", str(path)]) == 2
    assert "steps: 4 -> 6" in capsys.readouterr().err


# ------------------------------------------------------------------------------ one writer
def test_a_second_writer_gets_the_lock_error_naming_the_pid(tiny_bert, mini_data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ept.training.rundir import RunDir; held = RunDir(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(60)", str(out) + "/"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            run(_cfg(tiny_bert, mini_data, out, steps=4), progress=False)
        assert not (out / "config.json").exists()  # the second writer wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder (even killed): the folder is usable again
    assert run(_cfg(tiny_bert, mini_data, out, steps=4), progress=False)["status"] == "finished"


def test_out_that_is_a_file_is_a_clear_error(tiny_bert, mini_data, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        run(_cfg(tiny_bert, mini_data, tmp_path / "f"), progress=False)


def test_sweep_workers_die_with_their_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys\n"
        "code = 'import os, time\\nfrom ept.sweep import die_with_parent\\ndie_with_parent(os.getppid())\\n"
        "print(os.getpid(), flush=True)\\ntime.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code])\n"
        "child.wait()\n")], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "State:\tZ" not in state

    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the worker outlived its parent"


# ------------------------------------------------------------------------------ checkpoints and logs
def _make_legacy(out) -> None:
    """Turn a run folder into one written before the pair settings existed."""
    config = json.loads((out / "config.json").read_text())
    for key in ("pair_encoding", "pair_head", "pair_fit_examples"):
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))


def test_legacy_pair_run_means_cross_at_resume_and_at_eval(tiny_bert, data_dir, tmp_path, monkeypatch):
    """A folder from before `pair_encoding` (no key) encoded pairs jointly: resuming it with
    today's default (siamese) is refused naming the key and the flag; resumed as cross it ends as
    an uninterrupted cross run, and `ept eval` reads it as cross too."""
    from ept.evaluation import evaluate_run, load_run

    kw = dict(task="mrpc", pair_encoding="cross", max_length=24, max_eval_examples=8)
    reference = run(_cfg(tiny_bert, data_dir, tmp_path / "ref", **kw), progress=False)
    out = tmp_path / "legacy"
    _interrupted(tiny_bert, data_dir, out, monkeypatch, **kw)
    _make_legacy(out)
    default = {k: v for k, v in kw.items() if k != "pair_encoding"}
    with pytest.raises(StaleRunError) as err:
        run(_cfg(tiny_bert, data_dir, out, **default), progress=False)
    assert "pair_encoding: 'cross' -> 'siamese'" in str(err.value) and "--pair-encoding cross" in str(err.value)
    assert _metrics(run(_cfg(tiny_bert, data_dir, out, **kw), progress=False)) == _metrics(reference)
    _make_legacy(out)  # the resume rewrote config.json; eval must read a legacy one as cross as well
    cfg, model = load_run(out)
    assert cfg.pair_encoding == "cross" and model.pair_head is None
    assert evaluate_run(out, model=model, cfg=cfg)["accuracy"] == reference["test"]["accuracy"]


def test_legacy_single_sentence_run_resumes_with_todays_defaults(tiny_bert, mini_data, tmp_path, monkeypatch):
    """Pair settings do not change a single-sentence task: they are not part of its identity."""
    reference = run(_cfg(tiny_bert, mini_data, tmp_path / "ref"), progress=False)
    out = tmp_path / "legacy"
    _interrupted(tiny_bert, mini_data, out, monkeypatch)
    _make_legacy(out)
    assert _metrics(run(_cfg(tiny_bert, mini_data, out), progress=False)) == _metrics(reference)


def test_torn_steps_log_is_reported_and_truncated_on_resume(tiny_bert, mini_data, tmp_path, monkeypatch, capsys):
    reference = run(_cfg(tiny_bert, mini_data, tmp_path / "ref"), progress=False)
    out = tmp_path / "torn"
    _interrupted(tiny_bert, mini_data, out, monkeypatch)
    with open(out / "steps.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 0.6')  # a full disk / kill mid-line
    capsys.readouterr()
    resumed = run(_cfg(tiny_bert, mini_data, out), progress=False)
    assert "steps.jsonl: dropped a partial last line" in capsys.readouterr().out
    assert _metrics(resumed) == _metrics(reference)
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == list(range(1, 9))


def test_env_json_keeps_the_machines_a_resumed_run_ran_on(tiny_bert, mini_data, tmp_path, monkeypatch):
    """Steps 1-4 ran on one machine, 5-8 on another: env.json says both, with the steps each ran
    from; a start from step 0 keeps none of the earlier ones."""
    out = tmp_path / "moved"
    _interrupted(tiny_bert, mini_data, out, monkeypatch)
    first = json.loads((out / "env.json").read_text())
    assert first["from_step"] == 0 and "earlier" not in first
    first["cpu_capability"] = "ANOTHER"  # as if the first start ran elsewhere
    (out / "env.json").write_text(json.dumps(first))
    run(_cfg(tiny_bert, mini_data, out), progress=False)
    env = json.loads((out / "env.json").read_text())
    assert env["from_step"] == 4 and env["cpu_capability"] != "ANOTHER"
    assert [(e["from_step"], e["cpu_capability"]) for e in env["earlier"]] == [(0, "ANOTHER")]
    RunDir(out).write_env({"cpu_capability": "X"}, 0)  # from scratch: nothing earlier is kept
    assert json.loads((out / "env.json").read_text()) == {"cpu_capability": "X", "from_step": 0}


def test_ft_resumes_although_some_parameters_have_no_optimizer_state(tiny_bert, mini_data, tmp_path, monkeypatch):
    """BERT's pooler trains under ft but never gets a gradient (the scorer mean-pools): AdamW keeps
    no state for it, and the checkpoint check must accept that."""
    kw = dict(method="ft", lr=1e-3)
    reference = run(_cfg(tiny_bert, mini_data, tmp_path / "ref", **kw), progress=False)
    out = tmp_path / "ft"
    _interrupted(tiny_bert, mini_data, out, monkeypatch, **kw)
    assert _metrics(run(_cfg(tiny_bert, mini_data, out, **kw), progress=False)) == _metrics(reference)


def test_a_bad_line_inside_a_log_is_an_error_naming_it(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(RunDirError, match=r"steps.jsonl:2"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    warnings = []
    assert read_jsonl(path, warn=warnings.append) == [{"step": 1}] and "partial last line" in warnings[0]


@pytest.mark.parametrize("damage", ["wrong_keys", "truncated", "state_999", "best_truncated", "state_json_torn"])
def test_damaged_checkpoint_fails_before_training_naming_the_file(tiny_bert, mini_data, tmp_path, monkeypatch, damage):
    from safetensors.torch import save_file

    out = tmp_path / damage
    _interrupted(tiny_bert, mini_data, out, monkeypatch)
    target = {"wrong_keys": out / "last" / "method.safetensors", "truncated": out / "last" / "method.safetensors",
              "state_999": out / "last" / "state.json", "best_truncated": out / "best" / "method.safetensors",
              "state_json_torn": out / "last" / "state.json"}[damage]
    if damage == "wrong_keys":
        save_file({"encoder.other": torch.zeros(3)}, str(target))
        expected = r"missing \['encoder\.phi.*unexpected \['encoder\.other'\]"
    elif damage in ("truncated", "best_truncated"):
        target.write_bytes(target.read_bytes()[:40])
        expected = "unreadable safetensors"
    elif damage == "state_999":
        state = json.loads(target.read_text())
        target.write_text(json.dumps({**state, "step": 999}))
        expected = "step 999 is not in 1..steps=8"
    else:
        target.write_text(target.read_text()[:15])
        expected = "unreadable JSON"
    steps_before = (out / "steps.jsonl").read_text()
    monkeypatch.setattr(train_mod, "train_step", lambda *a, **k: pytest.fail("trained on a damaged checkpoint"))
    with pytest.raises((CheckpointError, RunDirError)) as err:
        run(_cfg(tiny_bert, mini_data, out), progress=False)
    assert str(target) in str(err.value) and "delete" in str(err.value)
    assert __import__("re").search(expected, str(err.value)), str(err.value)
    assert (out / "steps.jsonl").read_text() == steps_before


def test_report_and_analyze_skip_a_broken_run_folder(finished, tmp_path, capsys):
    from ept.analysis.runs import load_records

    out, _ = finished
    root = tmp_path / "runs"
    root.mkdir()
    os.symlink(out, root / "good")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    (broken / "results.json").write_text((out / "results.json").read_text()[:30])
    records, skipped = load_records([root])
    assert [r.name for r in records] == ["good"]
    assert any("broken" in s and "unreadable JSON" in s for s in skipped)
    assert f"skipping broken run folder {broken}" in capsys.readouterr().err


def test_atomic_writes_use_a_unique_temp_file_and_the_umask(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "a")
    atomic_write_text(target, "b")
    assert target.read_text() == "b" and os.listdir(tmp_path) == ["x.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask


# ------------------------------------------------------------------------------ trainer defaults
def test_linear_schedule_decays_to_zero_at_the_last_step(tiny_bert, mini_data, tmp_path):
    from ept.training.recipe import setup_model, setup_optimizer

    out = tmp_path / "lin"
    cfg = _cfg(tiny_bert, mini_data, out, steps=4, eval_every=2, lr=0.2, lr_scheduler="linear")
    run(cfg, progress=False)
    lrs = [r["lr"] for r in read_jsonl(out / "steps.jsonl")]
    assert lrs == pytest.approx([0.2, 0.15, 0.1, 0.05])
    # the schedule itself: after the last step the lr is exactly 0; a resume at step 2 continues it
    model, _ = setup_model(cfg, __import__("ept.tasks", fromlist=["get_task"]).get_task("sst2"), torch.device("cpu"))
    opt, sched = setup_optimizer(cfg, model)
    for _ in range(cfg.steps):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [0.0]
    _, resumed = setup_optimizer(cfg, model, start=2)
    assert resumed.get_last_lr() == pytest.approx([0.1])
    warm = dataclasses.replace(cfg, warmup_steps=2, lr_scheduler="constant")
    _, sched = setup_optimizer(warm, model)
    assert sched.get_last_lr() == [0.0]


def test_clipping_bounds_the_gradient_norm(tiny_bert, mini_data, tmp_path):
    from ept.batching import collate
    from ept.kinds import encode
    from ept.tasks import get_task, load_task
    from ept.training.recipe import setup_model, setup_optimizer, train_step

    norms = {}
    for clip in (None, 1e-4):
        torch.manual_seed(0)
        cfg = _cfg(tiny_bert, mini_data, tmp_path / "c", max_grad_norm=clip)
        model, scorer = setup_model(cfg, get_task("sst2"), torch.device("cpu"))
        opt, _ = setup_optimizer(cfg, model)
        seen = []
        opt.register_step_pre_hook(lambda o, *_: seen.append(float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for g in o.param_groups for p in g["params"]])))))
        rows = load_task("sst2", data_dir=str(mini_data)).train[:8]
        batch = collate(model.tokenizer, encode(model.tokenizer, rows, model.kind, 32).features)
        loss, mu = train_step(model, scorer, opt, batch, max_grad_norm=clip)
        norms[clip] = seen[0]
    assert norms[None] > 1e-3  # the raw gradient is far above the bound ...
    assert norms[1e-4] <= 1e-4 and norms[1e-4] == pytest.approx(1e-4, rel=1e-3)  # ... clipped down to it


def test_no_decay_on_biases_and_norm_weights(tiny_bert, mini_data, tmp_path):
    from ept.tasks import get_task
    from ept.training.recipe import setup_model, setup_optimizer

    opts = EPTConfig(layer_norm=True, bias=True)
    cfg = _cfg(tiny_bert, mini_data, tmp_path / "d", method=opts, decay_norm_and_bias=False)
    model, _ = setup_model(cfg, get_task("sst2"), torch.device("cpu"))
    opt, _ = setup_optimizer(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ([names[id(p)] for p in g["params"]] for g in opt.param_groups)
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[1]["weight_decay"] == 0.0
    assert sorted(decay) == ["encoder.phi.0.weight", "encoder.phi.2.weight", "encoder.prompt"]
    assert sorted(no_decay) == ["encoder.phi.0.bias", "encoder.phi.2.bias", "encoder.phi.3.bias", "encoder.phi.3.weight"]
    default, _ = setup_optimizer(_cfg(tiny_bert, mini_data, tmp_path / "d", method=opts), model)
    assert len(default.param_groups) == 1  # today's behaviour stays the default


def test_steps_log_has_the_raw_prompt_norm_beside_mu_t(finished):
    out, _ = finished
    rows = read_jsonl(out / "steps.jsonl")
    assert all(r["raw_norm"] > 0 and r["mu_t"] > 0 for r in rows)
    assert rows[-1]["raw_norm"] != pytest.approx(rows[-1]["mu_t"])  # P1 is not P' for EPT


def test_logs_replaced_under_a_running_trainer_keep_every_step(tiny_bert, mini_data, tmp_path, monkeypatch):
    """A run folder kept in git is replaced under a running trainer (a checkout, a stash, a pull):
    steps.jsonl / eval.jsonl are replaced by a new file of the same content mid-run, and every
    later step still lands in the file at the path, not in the deleted one."""
    out = tmp_path / "run"
    calls = {"n": 0}
    real = train_mod.train_step

    def replacing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:  # after step 4's evaluation: both logs exist
            for name in ("steps.jsonl", "eval.jsonl"):
                path = out / name
                atomic_write_text(path, path.read_text())  # a new inode, as git writes it
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train_step", replacing)
    run(_cfg(tiny_bert, mini_data, out), progress=False)
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == list(range(1, 9))
    assert [r["step"] for r in read_jsonl(out / "eval.jsonl")] == [4, 8]


def test_a_folder_the_run_made_and_left_empty_is_removed_at_release(tmp_path):
    """A run that fails before writing anything (bad precision, data or backbone) leaves no empty
    folder holding a lock file; a folder that existed, or holds anything, stays."""
    fresh = RunDir(tmp_path / "a" / "run").acquire()
    assert (fresh.path / ".lock").exists()
    fresh.release()
    assert not fresh.path.exists() and (tmp_path / "a").is_dir()
    kept = RunDir(tmp_path / "existing")
    kept.path.mkdir()
    kept.acquire().release()
    assert kept.path.is_dir()
    wrote = RunDir(tmp_path / "wrote").acquire()
    wrote.write_config({"task": "sst2"})
    wrote.release()
    assert (wrote.path / "config.json").is_file()
    again = RunDir(tmp_path / "a" / "run").acquire()  # the lock still works after a removal
    with pytest.raises(RunLockedError):
        RunDir(tmp_path / "a" / "run").acquire()
    again.release()
