"""Run by tests/test_train.py (`test_sharded_evaluation_equals_one_process`), under torchrun or in
process: one seeded prompted model evaluated by `ept.training.recipe.evaluate`, its predictions captured."""

from __future__ import annotations

import json
import sys

import torch


def evaluate_rows(backbone: str, data_dir: str, task: str, eval_mode: str, n: int, accelerator=None) -> dict:
    """{"metrics", "preds"} of a seeded (untrained) EPT model on the first `n` validation rows."""
    import ept.tasks
    from ept.tasks import load_task
    from ept.training.recipe import TrainConfig, evaluate, setup_model

    cfg = TrainConfig(task=task, method="ept", backbone=backbone, eval_mode=eval_mode, data_dir=data_dir)
    data = load_task(task, data_dir=data_dir, seed=cfg.split_seed)
    torch.manual_seed(0)  # the same prompt on every process
    model, scorer = setup_model(cfg, data.spec, "cpu")
    rows = data.validation[:n]
    captured, real = {}, ept.tasks.score

    def capture(spec, preds, examples):
        captured["preds"] = preds
        return real(spec, preds, examples)

    ept.tasks.score = capture
    try:
        metrics = evaluate(scorer, data.spec, model.tokenizer, scorer.encode(rows, 32), rows, 4, "cpu", accelerator)
    finally:
        ept.tasks.score = real
    return {"metrics": metrics, "preds": captured["preds"]}


if __name__ == "__main__":
    from accelerate import Accelerator

    backbone, data_dir, task, eval_mode, n, out = sys.argv[1:]
    acc = Accelerator(cpu=True)
    result = evaluate_rows(backbone, data_dir, task, eval_mode, int(n), acc)
    with open(f"{out}.{acc.process_index}.json", "w") as f:
        json.dump({**result, "world": acc.num_processes}, f)
    acc.end_training()
