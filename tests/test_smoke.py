"""Pinned numbers: silent numeric drift (a changed init, data order, loss reduction, optimizer
default, dtype) shows up here first, as a loss that moved.

To regenerate after an INTENDED change, run
    python -m pytest tests/test_smoke.py -s
read the printed losses, and paste them into PINNED below (say why in the commit message).
"""

from __future__ import annotations

import json

import pytest

from ept.training.recipe import TrainConfig, run

pytestmark = pytest.mark.usefixtures("one_thread")

# Measured 2026-11-27 with torch 2.13.0 (CPU), transformers 5.24.0: EPT on a 2-layer BERT
# (conftest `tiny_bert`, seed 0), the first 300 SST-2 rows (`mini_data`), seed 0, batch 8.
PINNED = {"loss_step5": 0.7065386176109314, "mu_t_step5": 50.627525329589844}


def test_loss_after_five_steps_is_pinned(tiny_bert, mini_data, tmp_path):
    cfg = TrainConfig(task="sst2", method="ept", backbone=tiny_bert, steps=5, eval_every=5, batch_size=8,
                      max_eval_examples=8, max_length=32, data_dir=str(mini_data), out=str(tmp_path / "run"),
                      tensorboard=False, seed=0)
    assert run(cfg, progress=False)["status"] == "finished"
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    got = {"loss_step5": steps[4]["loss"], "mu_t_step5": steps[4]["mu_t"]}
    print(f"pinned values: {got!r}")
    assert got["loss_step5"] == pytest.approx(PINNED["loss_step5"], rel=1e-5)
    assert got["mu_t_step5"] == pytest.approx(PINNED["mu_t_step5"], rel=1e-5)
