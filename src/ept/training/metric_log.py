"""What a training run logs: steps.jsonl and eval.jsonl (append-only), TensorBoard and the
progress bar; written by rank 0 only."""

from __future__ import annotations

import json

from ept.config import TrainConfig
from ept.training.rundir import RunDir


class MetricLog:
    """steps.jsonl / eval.jsonl (append-only), TensorBoard and the progress bar; rank 0 only."""

    def __init__(self, rundir: RunDir, cfg: TrainConfig, start: int, enabled: bool, progress: bool):
        from tqdm.auto import tqdm

        self.rd, self.enabled, self.last_val = rundir, enabled, None
        self.writer = None
        if enabled and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(rundir.tb), purge_step=start + 1)
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not (enabled and progress), desc=f"{cfg.task}/{cfg.method.name}")

    def step(self, step: int, **row) -> None:
        if not self.enabled:
            return
        _append(self.rd.steps_path, {"step": step, **row})
        if self.writer:
            for k, v in row.items():
                if v is not None:
                    self.writer.add_scalar(f"train/{k}", v, step)
        mu = row.get("mu_t")
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", mu_t=f"{mu:.3g}" if mu is not None else "-", val=self.last_val)
        self.bar.update(1)

    def evaluation(self, step: int, metrics: dict, main_metric: str) -> None:
        self.last_val = round(metrics[main_metric], 2)
        _append(self.rd.evals_path, {"step": step, **metrics})
        if self.writer:
            for k, v in metrics.items():
                self.writer.add_scalar(f"validation/{k}", v, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()


def _append(path, row: dict) -> None:
    # Opened per line, not held open: a run folder kept in git is replaced under a running trainer
    # (a checkout, a stash, a pull of a committed unfinished run) and a held handle would go on
    # writing to the old, deleted file. One open per step costs microseconds against a step's
    # seconds, and every step is on disk as it ends (`tail -f steps.jsonl`).
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
