"""ept's PEFT export, checked by a client nobody here wrote: lm-evaluation-harness scores an exported
prompt (PEFT adapter on the frozen backbone) and must agree with `ept serve` row by row
(experiments/crosscheck/lm_eval_check.py; on SmolLM2: results/crosscheck/lm-eval-sst2.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("lm_eval", reason="lm-evaluation-harness is a dev extra: pip install -e .[dev]")


@pytest.mark.integration  # three ept processes and lm-eval: ~1-2 min
def test_lm_eval_scores_an_export_as_ept_serve_does(tiny_llama_dir, data_dir, tmp_path):
    from ept.training.recipe import TrainConfig, run

    spec = importlib.util.spec_from_file_location("lm_eval_check", ROOT / "experiments" / "crosscheck" / "lm_eval_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    folder = tmp_path / "sst2-pt"
    res = run(TrainConfig(task="sst2", method="pt", backbone=tiny_llama_dir, steps=4, eval_every=4, batch_size=4, lr=0.3,
                          max_eval_examples=8, max_length=64, data_dir=str(data_dir), out=str(folder), tensorboard=False,
                          template="natural", label_score_eos=False), progress=False)
    assert res["status"] == "finished"
    assert check.main([str(folder), "--rows", "24", "--no-frozen", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    [row] = json.loads((tmp_path / "lm-eval-sst2.json").read_text())["runs"]
    assert row["rows"] == 24
    assert row["predictions_that_differ"] == 0 and row["ept_accuracy"] == row["lm_eval_accuracy"]
    assert row["max_abs_score_diff"] < 1e-4, row  # fp32 rounding; the EOS term alone was ~1e-3 on SmolLM2
    # All of the run's test rows: lm-eval against the predictions training recorded, then the
    # cached comparison reused by a rerun (nothing is scored again).
    recorded = [json.loads(line) for line in (folder / "predictions-test.jsonl").read_text().splitlines()]
    n = len(recorded)
    assert check.main([str(folder), "--rows", str(n), "--no-frozen", "--no-noise-floor", "--data-dir", str(data_dir),
                       "--out", str(tmp_path)]) == 0
    [row] = json.loads((tmp_path / "lm-eval-sst2.json").read_text())["runs"]
    assert row["rows"] == n and "noise_floor_max_abs_diff" not in row
    assert row["lm_eval_differs_from_recorded"] == 0 and row["recorded_accuracy"] == pytest.approx(res["test"]["accuracy"], abs=0.01)
    assert "Against each run's own recorded test predictions" in (tmp_path / "lm-eval-sst2.md").read_text()

    def scored_again(*a, **kw):
        raise AssertionError("a cached run was scored again")

    check.lm_eval_scores = scored_again
    assert check.main([str(folder), "--rows", str(n), "--no-frozen", "--no-noise-floor", "--data-dir", str(data_dir),
                       "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "lm-eval-sst2.json").read_text())["runs"] == [row]
