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
    assert text.startswith("# Reproduces"), "each spec names the table/figure it reproduces"
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
