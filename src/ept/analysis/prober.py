"""Evaluate a trained run with a prompt of our choosing, no training (paper Fig. 4, Fig. 10).

`Prober` loads each backbone once and rebuilds each run's PromptedModel on it, so an analysis
over many runs pays the backbone load once. `PromptedModel.build_inputs(batch, prompt=P)` lets
the scorer run with any prompt tensor: a concatenated single token P_c = [P_i; ...; P_i] (l, e),
or another task's prompt.
"""

from __future__ import annotations

import torch


class Prober:
    def __init__(self, data_dir: str | None = None):
        self.data_dir = data_dir
        self._backbones: dict = {}
        self._data: dict = {}

    def backbone(self, name: str):
        if name not in self._backbones:
            from ept.backbones import load_backbone

            model, tokenizer = load_backbone(name)
            model.eval().requires_grad_(False)
            self._backbones[name] = (model, tokenizer)
        return self._backbones[name]

    def model(self, record):
        """PromptedModel with the run's best state, in eval mode."""
        from ept.checkpoint import load_method

        backbone, tokenizer = self.backbone(record.config["backbone"])
        return load_method(record.rundir.best, backbone, tokenizer).eval()

    def examples(self, record, task: str | None, split: str, max_examples: int | None):
        from ept.tasks import TaskSpec, load_task
        from ept.tasks.taskfile import resolve_task

        # a TaskSpec (another run's task file), the run's own task, or a name / task file
        spec = task if isinstance(task, TaskSpec) else record.spec if task in (None, record.task) else resolve_task(task)
        task = spec.name
        key = (task, record.config.get("data_dir"), record.config.get("split_seed", 42), record.config.get("template"))
        if key not in self._data:
            self._data[key] = load_task(spec, data_dir=self.data_dir or key[1], seed=key[2], template=key[3])
        data = self._data[key]
        cap = max_examples if max_examples is not None else record.config.get("max_eval_examples")
        rows = getattr(data, split)[:cap]
        if not rows:
            raise ValueError(f"task {task!r} has no {split} examples here ({data.source})")
        return data.spec, rows

    @torch.no_grad()
    def evaluate(self, model, record, prompt: torch.Tensor | None, task: str | None = None,
                 split: str = "validation", max_examples: int | None = None) -> dict:
        """Metrics (x100) of `model` with `prompt` (None: the run's own P') on `task`/`split`."""
        from ept.batching import batches
        from ept.heads import make_scorer
        from ept.tasks import score

        spec, rows = self.examples(record, task, split, max_examples)
        scorer = make_scorer(model, spec, record.config.get("eval_mode"),
                             pair_encoding=record.config.get("pair_encoding", "cross"),  # older runs: joint pairs
                             pair_head=record.config.get("pair_head", "trainable"),
                             label_score_eos=record.config.get("label_score_eos", True))
        max_len = record.config.get("max_length") or spec.max_length
        encoded = scorer.encode(rows, max_len)
        device = next(model.parameters()).device
        preds: list = []
        for batch in batches(model.tokenizer, encoded, record.config.get("eval_batch_size", 64)):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            preds.extend(scorer.predict(batch, prompt=None if prompt is None else prompt.to(device)))
        return score(spec, preds, rows)
