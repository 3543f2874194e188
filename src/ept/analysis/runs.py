"""Read run folders written by `ept train` (the only input of analyses and reports).

A path given on the command line is a run folder (it holds config.json) or a folder of runs (a
sweep root, with or without sweep.json); both expand to `RunRecord`s. Nothing here loads a
model: prompts come from `export/prompt.safetensors` (the best state's P', network discarded).
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ept.training.rundir import RunDir, RunDirError, find_runs, read_jsonl


@dataclass
class RunRecord:
    path: Path
    config: dict  # asdict(TrainConfig)
    results: dict | None  # results.json, None while the run has not ended
    options: dict = field(default_factory=dict)  # the method's resolved switches (defaults filled in)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self) -> str:
        return self.config["task"]

    @property
    def spec(self):
        """The run's TaskSpec: a task file's stored content, else the registered task."""
        from ept.tasks.taskfile import stored_spec

        return stored_spec(self.task, self.config.get("task_spec"), self.config.get("task_file"))

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def finished(self) -> bool:
        return bool(self.results) and self.results.get("status") == "finished"

    @property
    def main_metric(self) -> str | None:
        return (self.results or {}).get("main_metric")

    def score(self, split: str = "test") -> float | None:
        """The task's main metric (x100) on `split` of the best state, None when absent."""
        metrics = (self.results or {}).get(split) or {}
        value = metrics.get(self.main_metric) if self.main_metric else None
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.path)

    def steps_log(self) -> list[dict]:
        # A live run may be mid-write: a torn last line is dropped, never an error here.
        return read_jsonl(self.rundir.steps_path)

    def eval_log(self) -> list[dict]:
        return read_jsonl(self.rundir.evals_path)


def resolved_options(config: dict) -> dict:
    """Every switch of the run's method, defaults included (ept_star -> num_tokens 10)."""
    from ept.method_configs import config_from_dict  # torch-free; tolerates older ft/lora/ia3 configs

    return {k: v for k, v in config_from_dict({**config.get("method_options", {}), "method": config["method"]}).to_dict().items()
            if k != "method"}


def read_record(rd: RunDir) -> RunRecord:
    """A run folder as a record; its config has TrainConfig's defaults filled in for fields added
    after it was written. Raises RunDirError (naming the file) for a broken folder."""
    config = rd.read_config(fill_defaults=True)
    try:
        options = resolved_options(config)
    except (ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{rd.config_path}: method switches do not load ({err})") from None
    return RunRecord(rd.path, config, rd.read_results(), options)


def load_records(paths, finished_only: bool = True) -> tuple[list[RunRecord], list[str]]:
    """(records, skipped) for run folders and sweep roots; duplicates are read once.
    `skipped` names the runs left out and why (failed, not finished)."""
    records, skipped, seen = [], [], set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run folder")
        for rd in find_runs(path):
            key = rd.path.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                rec = read_record(rd)
            except (RunDirError, FileNotFoundError) as err:  # one broken folder never stops the rest
                print(f"ept: warning: skipping broken run folder {rd.path}: {err}", file=sys.stderr)
                skipped.append(f"{rd.path.name}: broken ({err})")
                continue
            if finished_only and not rec.finished:
                results = rec.results
                why = (results or {}).get("error") or "not finished"
                skipped.append(f"{rd.path.name}: {(results or {}).get('status', 'running/killed')} ({why})")
                continue
            records.append(rec)
    return records, skipped


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value); the paper's "averaged over 3 runs" ± std."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group_by(records: list[RunRecord], key) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def load_prompt(record: RunRecord):
    """P' (n, e) of the run's best state, from its export (EPT: one vector broadcast n times)."""
    from ept.checkpoint import load_exported

    prompt, _ = load_exported(record.rundir.export)
    return prompt.float()
