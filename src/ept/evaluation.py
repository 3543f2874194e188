"""Evaluate a finished (or interrupted) run folder's best prompt on any task and split."""

from __future__ import annotations

import torch


def load_run(run_dir, data_dir=None):
    """(TrainConfig, PromptedModel with the best state) of a run folder."""
    from ept.checkpoint import load_method
    from ept.rundir import RunDir
    from ept.train import TrainConfig

    rd = RunDir(run_dir)
    cfg = TrainConfig.from_dict(rd.read_config())
    if not rd.best.exists():
        raise FileNotFoundError(f"{rd.path}: no best/ state yet (the run never reached an evaluation)")
    from ept.backbones import load_backbone

    backbone, tokenizer = load_backbone(cfg.backbone, dtype=getattr(torch, cfg.dtype))
    return cfg, load_method(rd.best, backbone, tokenizer)


def evaluate_run(run_dir, split: str = "test", task: str | None = None, data_dir=None,
                 max_examples: int | None = None, model=None, cfg=None) -> dict:
    """Metrics of the run's best prompt on `task` (default the run's own) and write them to
    RUN/eval/<task>-<split>.json. Pass `model`/`cfg` to reuse a loaded run."""
    from ept.batching import encode
    from ept.heads import make_scorer
    from ept.rundir import RunDir, atomic_write_json
    from ept.tasks import load_task
    from ept.train import evaluate

    if model is None:
        cfg, model = load_run(run_dir, data_dir)
    model.eval()
    task = task or cfg.task
    data = load_task(task, data_dir=data_dir or cfg.data_dir, seed=cfg.split_seed)
    examples = getattr(data, split)[: max_examples or cfg.max_eval_examples]
    if not examples:
        raise ValueError(f"task {task!r} has no {split} examples here ({data.source})")
    scorer = make_scorer(model, data.spec, cfg.eval_mode)
    encoded = encode(model.tokenizer, examples, model.kind, cfg.max_length or data.spec.max_length)
    device = next(model.parameters()).device
    metrics = evaluate(scorer, data.spec, model.tokenizer, encoded, examples, cfg.eval_batch_size, device)
    out = {"task": task, "split": split, "examples": len(examples), **metrics}
    atomic_write_json(RunDir(run_dir).eval_output(task, split), out)
    return out
