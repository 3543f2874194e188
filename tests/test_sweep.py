"""`ept sweep`: spec validation before any run, deterministic folders, skip finished, failed runs
reported and never retried silently, local process pool, and a real local Ray runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ept.cli import main
from ept.sweep import SweepError, expand, load_spec, run_name

REPO = Path(__file__).resolve().parents[1]


def _spec(tiny_bert, mini_data, out, **grid):
    return {"out": str(out), "task": "sst2", "backbone": tiny_bert, "steps": 4, "eval_every": 2, "batch_size": 8,
            "max_eval_examples": 16, "max_length": 32, "data_dir": str(mini_data), "tensorboard": False,
            "grid": grid or {"method": ["pt", "ept"]}}


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_spec_lists_every_problem_before_any_run(tmp_path, capsys):
    spec = {"out": str(tmp_path / "out"), "stepz": 3, "hidden_size": 2,
            "grid": {"tasks": ["sst2", "sst3"], "methods": ["ept", "eptt"], "colour": [1]}}
    assert main(["sweep", str(_write(tmp_path / "bad.yaml", spec))]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'stepz'" in err and "allowed: " in err and "steps" in err
    assert "method switches go in method_options or in grid" in err  # hidden_size at the top level
    assert "unknown grid key 'colour'" in err
    assert "unknown task 'sst3'" in err and "Did you mean: sst2" in err and "Allowed: boolq" in err
    assert "unknown method 'eptt'" in err and "Allowed: ept, ept_star" in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    # a switch a method does not have: named with the allowed ones, per run
    with pytest.raises(SweepError, match="method 'pt' has no option.*hidden_size; allowed: init"):
        expand({"out": str(tmp_path), "grid": {"method": ["pt", "ept"], "hidden_size": [1, 5]}}, check_data=False)
    with pytest.raises(SweepError, match="task_overrides: task 'rte' is not in this sweep"):
        expand({"out": str(tmp_path), "task": "sst2", "task_overrides": {"rte": {"steps": 3}}}, check_data=False)


@pytest.mark.parametrize("spec", sorted(str(p.relative_to(REPO)) for p in (REPO / "experiments").rglob("*.yaml")))
def test_every_shipped_spec_is_valid(spec):
    text = (REPO / spec).read_text()
    assert text.startswith("# Reproduces"), "each spec names the table/figure it reproduces (or says it reproduces none)"
    assert "ept sweep " + spec in text or "ept analyze" in text, "each spec shows its command"
    sweep = load_spec(REPO / spec, check_data=False)
    assert sweep.runs


def test_expansion_is_deterministic(tmp_path):
    spec = {"out": str(tmp_path), "steps": 10, "grid": {"seeds": [0, 1], "tasks": ["sst2", "rte"], "methods": ["ept"],
                                                      "hidden_size": [1, 5],
                                                      "method_options": [{}, {"layer_norm": True}]},
            "task_overrides": {"rte": {"steps": 7}}}
    a, b = expand(spec, check_data=False), expand(spec, check_data=False)
    assert [r.name for r in a.runs] == [r.name for r in b.runs] and len(a.runs) == 16
    names = {r.name: r for r in a.runs}
    run = names["rte-ept-hidden_size=5-layer_norm=true-s1"]
    assert run.config["method_options"] == {"hidden_size": 5, "layer_norm": True}
    assert run.config["steps"] == 7 and names["sst2-ept-hidden_size=1-default-s0"].config["steps"] == 10
    assert Path(run.config["out"]) == tmp_path.resolve() / run.name
    assert run_name({"task": "cb", "method": "pt", "lr": 0.01, "seed": 2}, {}) == "cb-pt-lr=0.01-s2"


@pytest.mark.integration
def test_local_pool_skips_finished_and_reports_failed(tiny_bert, mini_data, tmp_path, capsys):
    # lr 1e30 overflows at step 1: a failed run, reported, not retried on the next invocation
    spec = _write(tmp_path / "s.yaml", _spec(tiny_bert, mini_data, tmp_path / "out",
                                             method=["pt", "ept"], lr=[0.3, 1e30]))
    assert main(["sweep", str(spec), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "[1 done / 0 failed / 3 left]" in out or "[0 done / 1 failed / 3 left]" in out
    assert "4 runs" in out and "2 finished, 2 failed" in out
    root = tmp_path / "out"
    for method in ("pt", "ept"):
        assert json.loads((root / f"sst2-{method}-lr=0.3-s0" / "results.json").read_text())["status"] == "finished"
        failed = json.loads((root / f"sst2-{method}-lr=1e+30-s0" / "results.json").read_text())
        assert failed["status"] == "failed" and "overflowed" in failed["error"]
    manifest = json.loads((root / "sweep.json").read_text())
    assert sorted(r["state"] for r in manifest["runs"]) == ["failed", "failed", "finished", "finished"]
    stamp = (root / "sst2-pt-lr=0.3-s0" / "results.json").stat().st_mtime_ns
    assert main(["sweep", str(spec), "--workers", "2"]) == 1  # nothing reruns
    out = capsys.readouterr().out
    assert "2 already finished | 2 failed before (not retried; --retry-failed to rerun) | 0 to run" in out
    assert (root / "sst2-pt-lr=0.3-s0" / "results.json").stat().st_mtime_ns == stamp
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert "finished 2 | failed 2 | partial 0 | pending 0" in capsys.readouterr().out


@pytest.mark.integration
def test_ray_executor_on_a_local_runtime(tiny_bert, mini_data, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    # Ray starts workers at nice 15: on a busy 2-core machine their torch import alone takes ~30 s.
    monkeypatch.setenv("RAY_worker_niceness", "0")
    from ept.sweep import execute, load_spec

    spec = _write(tmp_path / "r.yaml", _spec(tiny_bert, mini_data, tmp_path / "ray", method=["ept"]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        logs = []
        states = execute(load_spec(spec), executor="ray", log=logs.append)
    finally:
        ray.shutdown()
    assert states == {"sst2-ept-s0": "finished"}
    assert any("[1 done / 0 failed / 0 left] sst2-ept-s0" in line for line in logs)
    results = json.loads((tmp_path / "ray" / "sst2-ept-s0" / "results.json").read_text())
    assert results["status"] == "finished" and results["steps"] == 4


# ----------------------------------------------------------------- the paper's protocol (issue 10)
PAPER_SPECS = sorted((REPO / "experiments" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_paper_specs_generate_and_use_the_hf_trainer_defaults(path):
    sweep = load_spec(path, check_data=False)
    for run in sweep.runs:
        c = run.config
        assert c["eval_mode"] == "generate", run.name
        assert (c["lr_scheduler"], c["warmup_steps"], c["max_grad_norm"], c["decay_norm_and_bias"]) == \
            ("linear", 0, 1.0, False), run.name


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("[cg]pu/*.yaml")), ids=lambda p: p.name)
def test_cpu_specs_keep_rank_scoring_and_say_so(path):
    assert "Scoring: rank classification" in path.read_text()
    assert all(r.config["eval_mode"] is None for r in load_spec(path, check_data=False).runs)


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_table1_searches_the_lr_on_superglue_only(size):
    runs = load_spec(REPO / "experiments" / "paper" / f"table1_t5{size}.yaml", check_data=False).runs
    lrs: dict = {}
    for r in runs:
        lrs.setdefault((r.config["task"], r.config["method"]), set()).add(r.config["lr"])
    assert lrs[("boolq", "ept")] == lrs[("multirc", "pt")] == {0.003, 0.01, 0.03, 0.1, 0.3}
    assert lrs[("wsc", "ft")] == {1e-5, 1e-4, 1e-3}
    assert lrs[("cola", "ept")] == {0.3} and lrs[("sst2", "ft")] == {1e-5}  # GLUE: B.2's fixed rates
    assert len(runs) == 8 * 6 * 3 + 5 * 5 * 5 * 3 + 5 * 3 * 3
    # the figures that share the folders train nothing twice: same names, same configs
    table1 = {r.name: r.config for r in runs}
    if size == "base":
        for fig in ("fig11_norms.yaml", "fig2_fig3_fig4_norms_similarity_concat.yaml"):
            for r in load_spec(REPO / "experiments" / "paper" / fig, check_data=False).runs:
                assert table1[r.name] == r.config, (fig, r.name)


def test_dry_run_lists_generation_and_the_lr_grid(capsys):
    assert main(["sweep", "--dry-run", "--no-data-check", str(REPO / "experiments/paper/table1_t5base.yaml")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "eval_mode=generate" in lines[0]
    assert "lr: 0.003, 0.01, 0.03, 0.1, 0.3, 1e-05, 0.0001, 0.001" in lines[1]
    # SuperGLUE: 5 prompt methods x 5 tasks x 3 seeds per prompt lr; GLUE adds 8 x 5 x 3 at 0.3 and 8 x 3 ft at 1e-5
    assert lines[2] == ("runs by eval_mode and lr: generate lr=1e-05: 39, generate lr=0.0001: 15, "
                        "generate lr=0.001: 15, generate lr=0.003: 75, generate lr=0.01: 75, generate lr=0.03: 75, "
                        "generate lr=0.1: 75, generate lr=0.3: 195")
    assert "564 runs" in out
    for lr in ("0.003", "0.01", "0.03", "0.1", "0.3"):
        assert f"/boolq-ept-lr={lr}-s2" in out


def test_grids_union_and_its_errors(tmp_path):
    spec = {"out": str(tmp_path), "steps": 10, "task_overrides": {"rte": {"steps": 7}},
            "grids": [{"task": ["sst2", "rte"], "method": ["ept"]},
                      {"task": ["cb"], "method": ["pt", "ft"], "lr": [0.01, 0.1]},
                      {"task": ["rte"], "method": ["ept"]}]}  # overlaps the first grid: listed once
    sweep = expand(spec, check_data=False)
    assert [r.name for r in sweep.runs] == ["sst2-ept-s0", "rte-ept-s0", "cb-pt-lr=0.01-s0", "cb-pt-lr=0.1-s0",
                                            "cb-ft-lr=0.01-s0", "cb-ft-lr=0.1-s0"]
    assert {r.name: r.config["steps"] for r in sweep.runs}["rte-ept-s0"] == 7
    assert sweep.grid == {"task": ["sst2", "rte", "cb"], "method": ["ept", "pt", "ft"], "lr": [0.01, 0.1]}
    with pytest.raises(SweepError, match="`grids` must be a non-empty list of grid mappings"):
        expand({"out": str(tmp_path), "grids": {"task": ["sst2"]}}, check_data=False)
    with pytest.raises(SweepError, match="task_overrides: task 'cola' is in none of the grids"):
        expand({**spec, "task_overrides": {"cola": {"steps": 3}}}, check_data=False)
    with pytest.raises(SweepError, match="unknown grid key 'colour'"):
        expand({"out": str(tmp_path), "grids": [{"task": ["sst2"]}, {"colour": [1]}]}, check_data=False)


@pytest.mark.parametrize("bad, key, message", [
    ({"backbone": "minilm", "eval_mode": "generate"}, "eval_mode",
     "'generate' needs a backbone that generates text; backbone 'minilm' is an encoder"),
    ({"grid": {"lr": [0.3, -0.1]}}, "lr", "lr=-0.1: must be > 0"),  # TrainConfig's own check names the run
    ({"grid": {"lr": [0.0]}}, "lr", "lr=0.0: must be > 0"),
    ({"lr": -3}, "lr", "lr=-3"),
])
def test_protocol_errors_are_caught_before_any_run(bad, key, message, tmp_path, capsys):
    spec = {"out": str(tmp_path / "out"), "task": "sst2", "method": "ept", **bad}
    assert main(["sweep", str(_write(tmp_path / "bad.yaml", spec)), "--no-data-check"]) == 2
    err = capsys.readouterr().err
    assert key in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_yaml_string_lr_is_read_as_the_number(tmp_path):
    """One validation path (issue 21): YAML 1.1 reads `1e-5` as a string; `ept.flags.coerce` parses
    it like every numeric setting, so no separate lr check (or "write 1.0e-5" hint) is needed."""
    (tmp_path / "s.yaml").write_text(f"out: {tmp_path / 'out'}\ntask: sst2\nmethod: ft\ngrid:\n  lr: [1e-5, 3.0e-4]\n")
    assert [r.config["lr"] for r in load_spec(tmp_path / "s.yaml", check_data=False).runs] == [1e-5, 3e-4]


def test_generation_on_an_encoder_folder_is_caught_too(tiny_bert, tiny_t5_dir, tmp_path):
    with pytest.raises(SweepError, match=r"eval_mode: 'generate' needs .* is an encoder"):
        expand({"out": str(tmp_path), "backbone": tiny_bert, "eval_mode": "generate"}, check_data=False)
    assert expand({"out": str(tmp_path), "backbone": tiny_t5_dir, "eval_mode": "generate"}, check_data=False).runs


def test_grid_over_method_options_keeps_folders_written_before_typed_configs(tmp_path):
    """A grid `hidden_size: [1, 5]` once recorded `{hidden_size: 1}` (the default, as given); the same
    spec now records `{}`: the folder is the same run (not stale), and typed configs come back."""
    from ept.config import TrainConfig
    from ept.method_configs import LoRAConfig
    from ept.training.rundir import RunDir
    from ept.sweep import run_state, stale_keys

    spec = {"out": str(tmp_path), "steps": 10, "grid": {"methods": ["ept"], "hidden_size": [1, 5]}}
    runs = {r.name: r for r in expand(spec, check_data=False).runs}
    h1, h5 = runs["sst2-ept-hidden_size=1-s0"], runs["sst2-ept-hidden_size=5-s0"]
    assert (h1.config["method_options"], h5.config["method_options"]) == ({}, {"hidden_size": 5})
    assert TrainConfig.from_dict(h5.config).method.hidden_size == 5
    RunDir(h1.config["out"]).path.mkdir(parents=True)
    RunDir(h1.config["out"]).write_config({**h1.config, "method_options": {"hidden_size": 1}})  # the old spelling
    assert stale_keys(h1) == [] and run_state(h1) == "pending"
    RunDir(h5.config["out"]).path.mkdir(parents=True)
    RunDir(h5.config["out"]).write_config({**h5.config, "method_options": {"hidden_size": 4}})
    assert stale_keys(h5) == ["method_options: {'hidden_size': 4} -> {'hidden_size': 5}"]
    lora = expand({"out": str(tmp_path), "steps": 10, "method": "lora", "grid": {"lora_r": [4, 8]}}, check_data=False)
    assert [TrainConfig.from_dict(r.config).method for r in lora.runs] == [LoRAConfig(lora_r=4), LoRAConfig(lora_r=8)]


@pytest.mark.integration
def test_committed_runs_continue_on_a_fresh_clone(tiny_bert, mini_data, tmp_path, monkeypatch, capsys):
    """A long grid outlives one machine: its run folders are committed (the repository's
    .gitignore keeps locks and TensorBoard out), and a sweep in a fresh clone treats a committed
    finished run as done and resumes a committed unfinished one from its last/ checkpoint."""
    import shutil
    import subprocess

    def git(*args, cwd):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                       capture_output=True)

    repo, clone = tmp_path / "repo", tmp_path / "clone"
    repo.mkdir()
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    spec = _spec(tiny_bert, mini_data, "results/grid", method=["pt", "ept"])
    _write(repo / "grid.yaml", spec)
    monkeypatch.chdir(repo)
    assert main(["sweep", "grid.yaml", "--workers", "1"]) == 0
    first = {m: json.loads((repo / f"results/grid/sst2-{m}-s0/results.json").read_text()) for m in ("pt", "ept")}
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "runs", cwd=repo)
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert not any(p.endswith((".lock", ".owner.json")) for p in tracked)
    assert "results/grid/sst2-ept-s0/last/method.safetensors" in tracked
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    (clone / "results/grid/sst2-ept-s0/results.json").unlink()  # as if the machine stopped before the end
    monkeypatch.chdir(clone)
    capsys.readouterr()
    assert main(["sweep", "grid.yaml", "--dry-run"]) == 0
    assert "finished 1 | failed 0 | partial 1 | pending 0 | stale 0" in capsys.readouterr().out
    assert main(["sweep", "grid.yaml", "--workers", "1"]) == 0
    assert "1 already finished" in capsys.readouterr().out
    again = json.loads((clone / "results/grid/sst2-ept-s0/results.json").read_text())
    assert again["test"] == first["ept"]["test"] and again["best_step"] == first["ept"]["best_step"]
    assert json.loads((clone / "results/grid/sst2-pt-s0/results.json").read_text()) == first["pt"]


def test_pace_and_the_dry_run_say_what_is_left_and_how_fast_it_went(tmp_path, capsys):
    """`ept sweep --dry-run`: a partial run says its checkpoint step; the summary gives the steps
    left and the hours they take at the finished runs' median seconds a step, each timed over its
    last segment only (a resumed run's wall_seconds covers the steps after env.json's from_step)."""
    from ept.sweep import pace, run_state
    from ept.training.rundir import RunDir

    spec = _write(tmp_path / "s.yaml", {"out": str(tmp_path / "out"), "task": "sst2", "steps": 1000,
                                        "grid": {"method": ["pt", "ept"], "seed": [0, 1]}})
    runs = load_spec(spec, check_data=False).runs
    timings = {0: (2000.0, 0), 1: (1500.0, 500)}  # 2.0 and 3.0 s a step
    for i, run in enumerate(runs[:3]):
        rd = RunDir(run.config["out"])
        rd.path.mkdir(parents=True)
        rd.write_config(run.config)
        if i in timings:
            wall, from_step = timings[i]
            rd.results_path.write_text(json.dumps({"status": "finished", "wall_seconds": wall, "steps": 1000}))
            rd.env_path.write_text(json.dumps({"from_step": from_step}))
        else:
            rd.last.mkdir()
            rd.state_path.write_text(json.dumps({"step": 300}))
    p = pace(runs)
    assert (p.steps_left, p.steps_total, p.seconds_per_step, p.timed_runs) == (1700, 4000, 2.5, 2)
    assert p.hours(2) == pytest.approx(1700 * 2.5 / 2 / 3600)
    # states the caller already has are used as given (the dry run computes them once)
    assert pace(runs, {r.name: run_state(r) for r in runs}) == p
    assert pace(runs, {runs[0].name: "stale"}).steps_left == 1700 + 1000
    assert main(["sweep", str(spec), "--dry-run", "--no-data-check", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"partial   {runs[2].config['out']}  (step 300 of 1000)" in out
    assert ("steps left: 1,700 of 4,000; the finished runs took a median 2.50 s a step (2 runs, on the machines "
            "their env.json names): about 0.6 h at --workers 2") in out
