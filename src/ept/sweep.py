"""Grids of `ept train` runs: expand a spec, validate it whole, run it locally or on Ray.

    ept sweep experiments/cpu/table1_main.yaml --workers 2
    ept sweep experiments/paper/table1_t5base.yaml --executor ray --address ray://head:10001
    ept sweep experiments/cpu/fig8_lr.yaml --dry-run          # list runs and their state, run nothing

A spec is a YAML mapping: TrainConfig keys fixed for every run, `grid` (key -> list of values,
crossed), and `out` (the root that holds one folder per run)::

    out: /work/runs-cpu/main
    steps: 150
    max_eval_examples: 300
    grid:
      task: [sst2, rte]
      method: [ept, ept_star]
      seed: [0, 1]
      hidden_size: [1, 10]          # a method switch: goes into method_options
      method_options: [{}, {layer_norm: true}]   # or whole variants, merged over the fixed ones
    task_overrides:                 # optional: per-task TrainConfig keys (e.g. shorter runs on pairs)
      rte: {steps: 40, max_length: 96}

`grids` (a list of grid mappings) instead of `grid` runs the union of several crossed grids
under one root, for grids that depend on each other: the paper's lr search covers only the
SuperGLUE tasks, with one lr list for prompts and another for fine-tuning (experiments/paper/).

A task may be a task file (`task: [tasks/tickets.yaml, sst2]`; a relative path starts at the
spec's folder) and its run folders are named by the file's task name. Grid keys may be plural (`tasks`, `methods`, `seeds`). Run folders are named from the grid values
only (`sst2-ept-hidden_size=10-s0`), so the same spec always maps to the same folders and a
re-run skips what finished. A folder is only ever "finished" for the config that wrote it: when a
fixed key of the spec changed (steps, max_length, ...), the sweep refuses to start and names the
runs and keys (give another `out`, or `overwrite: true` to replace them). Each worker holds its run
folder's lock and dies with the sweep's process. A failed run stays failed (its results.json says why) until you pass
`--retry-failed`; it is never retried silently. A killed run resumes from its `last/` checkpoint.

Every error of a spec (unknown key, task, method, method switch, missing data) is gathered and
raised at once, before any run starts.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

PLURALS = {"tasks": "task", "methods": "method", "seeds": "seed", "backbones": "backbone", "lrs": "lr"}
SPEC_KEYS = ("out", "grid", "grids", "task_overrides", "name", "description")
# Grid keys that name the run folder first, in this order; the rest follow in spec order.
LEAD_KEYS = ("task", "method")


class SweepError(ValueError):
    """A bad spec; the message lists every problem found."""


@dataclass
class Run:
    name: str  # folder name under the sweep root
    config: dict  # TrainConfig as a dict, `out` filled in
    grid: dict  # this run's grid values (what varies)


@dataclass
class Sweep:
    out: Path
    runs: list[Run]
    grid: dict
    fixed: dict
    name: str = ""
    source: str | None = None
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ spec -> runs
def _method_option_names() -> set[str]:
    from ept.method_configs import option_names

    return option_names()


def _slug(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={_slug(v)}" for k, v in value.items()) or "default"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", Path(text).name if "/" in text else text)


def run_name(grid_values: dict, fixed: dict) -> str:
    """Deterministic folder name: task-method[-key=value...]-s<seed>."""
    task = grid_values.get("task", fixed.get("task", "sst2"))
    method = grid_values.get("method", fixed.get("method", "ept"))
    parts = [_slug(task), _slug(method)]
    for key, value in grid_values.items():
        if key in ("task", "method", "seed"):
            continue
        parts.append(_slug(value) if key == "method_options" else f"{key}={_slug(value)}")
    parts.append(f"s{grid_values.get('seed', fixed.get('seed', 0))}")
    return "-".join(parts)


def _backbone_kind(name: str) -> str | None:
    """seq2seq | encoder | causal without loading weights; None when only loading can tell (a hub id)."""
    from ept.backbone_specs import BACKBONES
    from ept.backbones import kind_of_backbone

    if name not in BACKBONES and not Path(name).is_dir():
        return None
    try:
        return kind_of_backbone(name)
    except (ValueError, OSError):
        return None  # an unsupported or unreadable folder fails when the run loads it, with its own message


def _check_protocol(configs: list[dict]) -> list[str]:
    """Paper-protocol keys that would fail only inside a run: generation on a backbone that cannot
    generate. (The lr needs no check here: `TrainConfig.from_dict` already parsed and range-checked
    every run's config, YAML's string `1e-5` included, through `ept.flags.coerce`.)"""
    errors = []
    for c in configs:
        if c.get("eval_mode") == "generate" and _backbone_kind(c["backbone"]) == "encoder":
            errors.append(f"eval_mode: 'generate' needs a backbone that generates text; backbone {c['backbone']!r} "
                          f"is an encoder (rank classification only: drop eval_mode or use a seq2seq backbone)")
    return list(dict.fromkeys(errors))


def _expand_union(spec: dict, out, source, check_data: bool) -> Sweep:
    """`grids: [grid, grid, ...]`: each grid crossed on its own, runs concatenated under one root."""
    where = f"{source}: " if source else ""
    parts = spec["grids"]
    if "grid" in spec or not isinstance(parts, list) or not parts or not all(isinstance(g, dict) for g in parts):
        raise SweepError(f"{where}`grids` must be a non-empty list of grid mappings, and replaces `grid`; got {parts!r}")
    base = {k: v for k, v in spec.items() if k not in ("grids", "task_overrides")}
    overrides = spec.get("task_overrides") or {}
    sweeps, errors, tasks = [], [], set()
    for i, part in enumerate(parts):
        part_tasks = part.get("task", part.get("tasks", [spec.get("task", "sst2")]))
        part_tasks = part_tasks if isinstance(part_tasks, list) else []  # a bad value: expand() says so
        tasks.update(part_tasks)
        own = {t: v for t, v in overrides.items() if t in part_tasks} if isinstance(overrides, dict) else overrides
        try:
            sweeps.append(expand({**base, "grid": part, "task_overrides": own}, out=out,
                                 source=f"{source or 'spec'} grids[{i}]", check_data=False))
        except SweepError as err:  # keep the problems, once each (a bad fixed key fails every grid)
            errors += [line.strip()[2:] for line in str(err).splitlines() if line.strip().startswith("- ")]
    if isinstance(overrides, dict):
        errors += [f"task_overrides: task {t!r} is in none of the grids" for t in overrides if t not in tasks]
    if errors:
        raise SweepError(where + "bad sweep spec:\n  - " + "\n  - ".join(dict.fromkeys(errors)))
    runs, seen = [], {}
    for sw in sweeps:
        for r in sw.runs:
            if r.name in seen and seen[r.name].config != r.config:
                errors.append(f"{r.name}: two grids map to this folder with different configs")
            elif r.name not in seen:
                seen[r.name] = r
                runs.append(r)
    errors += _check_data([r.config for r in runs]) if check_data and not errors else []
    if errors:
        raise SweepError(where + "bad sweep spec:\n  - " + "\n  - ".join(errors))
    grid = {}
    for sw in sweeps:
        for key, values in sw.grid.items():
            grid.setdefault(key, [])
            grid[key] += [v for v in values if v not in grid[key]]
    return Sweep(sweeps[0].out, runs, grid, sweeps[0].fixed, spec.get("name", ""), source)


def _check_data(configs: list[dict]) -> list[str]:
    """Load each distinct (task, data_dir, split_seed, few_shot) once: a task without training
    data here fails now, not an hour into the sweep."""
    from ept.tasks import load_task
    from ept.tasks.taskfile import stored_spec

    errors, seen = [], set()
    for c in configs:
        key = (c["task"], c.get("data_dir"), c.get("split_seed", 42), c.get("few_shot"), c.get("task_file"))
        if key in seen:
            continue
        seen.add(key)
        try:
            spec = stored_spec(c["task"], c.get("task_spec"), c.get("task_file"))
            data = load_task(spec, data_dir=c.get("data_dir"), seed=key[2], few_shot_k=key[3])
        except Exception as err:  # noqa: BLE001 - any loader error is reported with the task name
            errors.append(f"task {c['task']!r}: data cannot be loaded: {err}")
            continue
        if not data.train:
            errors.append(f"task {c['task']!r} has no training examples in {data.source}")
        if not data.validation or not data.test:
            errors.append(f"task {c['task']!r} has no validation/test examples in {data.source}")
    return errors


def _validate(spec: dict, out, where: str) -> tuple[dict, dict, dict, set, set]:
    """(fixed, grid, task_overrides, TrainConfig keys, method switch names) of a spec; raises
    SweepError listing every problem of its keys and names."""
    from ept.config import TrainConfig
    from ept.method_configs import METHODS
    from ept.tasks.taskfile import resolve_task

    errors: list[str] = []
    train_keys = TrainConfig.keys() - {"out"}
    option_keys = _method_option_names()
    fixed = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    for key in sorted(set(fixed) - train_keys):
        hint = " (method switches go in method_options or in grid)" if key in option_keys else ""
        errors.append(f"unknown key {key!r}{hint}; allowed: {', '.join(sorted(train_keys | set(SPEC_KEYS)))}")
    fixed = {k: v for k, v in fixed.items() if k in train_keys}
    if "method_options" in fixed and not isinstance(fixed["method_options"], dict):
        errors.append(f"method_options must be a mapping, got {fixed['method_options']!r}")
        fixed.pop("method_options")
    root = out or spec.get("out")
    if not root:
        errors.append("no `out`: give the sweep root in the spec or with --out")

    grid: dict[str, list] = {}
    raw_grid = spec.get("grid") or {}
    if not isinstance(raw_grid, dict):
        errors.append(f"grid must be a mapping of key -> list, got {type(raw_grid).__name__}")
        raw_grid = {}
    allowed_grid = sorted(train_keys | option_keys | set(PLURALS))
    for key, values in raw_grid.items():
        canon = PLURALS.get(key, key)
        if canon not in train_keys and canon not in option_keys:
            errors.append(f"unknown grid key {key!r}; allowed: {', '.join(allowed_grid)}")
            continue
        if canon in grid or canon in fixed:
            errors.append(f"grid key {key!r} is given twice (as {canon!r} in grid or as a fixed key)")
            continue
        if not isinstance(values, list) or not values:
            errors.append(f"grid key {key!r} needs a non-empty list, got {values!r}")
            continue
        if canon == "method_options" and not all(isinstance(v, dict) for v in values):
            errors.append(f"grid method_options must be a list of mappings, got {values!r}")
            continue
        grid[canon] = values
    # Unknown names: one message per bad value, with the allowed ones.
    for value in grid.get("task", [fixed.get("task", "sst2")]):
        try:
            resolve_task(value)  # a name, or a task file (its own errors name it)
        except (KeyError, ValueError) as err:
            errors.append(f"task: {err}")
    for value in grid.get("method", [fixed.get("method", "ept")]):
        try:
            METHODS.canonical(value)
        except KeyError as err:
            errors.append(f"method: {err}")
    overrides = spec.get("task_overrides") or {}
    if not isinstance(overrides, dict):
        errors.append(f"task_overrides must be a mapping task -> {{key: value}}, got {overrides!r}")
        overrides = {}
    tasks_in_spec = grid.get("task", [fixed.get("task", "sst2")])
    for task, keys in overrides.items():
        if task not in tasks_in_spec:
            errors.append(f"task_overrides: task {task!r} is not in this sweep; tasks: {', '.join(map(str, tasks_in_spec))}")
        if not isinstance(keys, dict):
            errors.append(f"task_overrides[{task!r}] must be a mapping of TrainConfig keys, got {keys!r}")
            continue
        for key in keys:
            if key not in train_keys or key in ("task", "method_options") or key in grid:
                errors.append(f"task_overrides[{task!r}]: key {key!r} cannot be overridden; allowed: "
                              f"{', '.join(sorted(train_keys - set(grid) - {'task', 'method_options'}))}")
    if errors:
        raise SweepError(where + "bad sweep spec:\n  - " + "\n  - ".join(dict.fromkeys(errors)))
    return fixed, grid, overrides, train_keys, option_keys


def expand(spec: dict, out: str | Path | None = None, source: str | None = None, check_data: bool = True) -> Sweep:
    """A validated Sweep from a spec mapping; raises SweepError listing every problem."""
    if isinstance(spec, dict) and "grids" in spec:
        return _expand_union(spec, out, source, check_data)
    from ept.config import TrainConfig

    where = f"{source}: " if source else ""
    if not isinstance(spec, dict):
        raise SweepError(f"{where}a sweep spec is a mapping, got {type(spec).__name__}")
    fixed, grid, overrides, train_keys, option_keys = _validate(spec, out, where)
    root = out or spec.get("out")
    order = [k for k in LEAD_KEYS if k in grid] + [k for k in grid if k not in LEAD_KEYS]
    runs, names, config_errors = [], {}, []
    for combo in itertools.product(*(grid[k] for k in order)):
        values = dict(zip(order, combo))
        config = {k: v for k, v in fixed.items()}
        config.update(overrides.get(values.get("task", fixed.get("task", "sst2")), {}) or {})
        options = dict(fixed.get("method_options") or {})
        for key, value in values.items():
            if key == "method_options":
                options.update(value)
            elif key in option_keys and key not in train_keys:
                options[key] = value
            else:
                config[key] = value
        config["method_options"] = options
        if config.get("data_dir"):  # absolute: analyses may read the run from another folder
            config["data_dir"] = str(Path(config["data_dir"]).expanduser().resolve())
        name = run_name(_named(values), _named(fixed))
        config["out"] = str(Path(root).expanduser().resolve() / name)
        try:
            resolved = TrainConfig.from_dict(config).to_dict()
        except (ValueError, KeyError, TypeError) as err:
            config_errors.append(f"{name}: {err}")
            continue
        if name in names:
            config_errors.append(f"{name}: two grid points map to the same folder ({names[name]} and {values})")
        names[name] = values
        runs.append(Run(name, resolved, values))
    if not config_errors:
        config_errors += _check_protocol([r.config for r in runs])
    if not config_errors and check_data:
        config_errors += _check_data([r.config for r in runs])
    if config_errors:
        shown = list(dict.fromkeys(config_errors))
        more = f"\n  ... and {len(shown) - 20} more" if len(shown) > 20 else ""
        raise SweepError(where + f"bad sweep spec ({len(shown)} problem(s)):\n  - " + "\n  - ".join(shown[:20]) + more)
    return Sweep(Path(root).expanduser().resolve(), runs, grid, fixed, spec.get("name", ""), source)


def _named(values: dict) -> dict:
    """Grid values as run folders name them: a task file by its task's name."""
    from ept.tasks.taskfile import is_task_file, read_task_file

    task = values.get("task")
    return {**values, "task": read_task_file(task).spec.name} if is_task_file(task) else values


def task_files_from(spec, base: Path):
    """The spec with every task file path (task, grid/grids task lists, task_overrides keys) in one
    spelling: relative ones made absolute from `base`, the spec's folder, as a task file's data
    paths are, and every one resolved, so "./t.yaml", "t.yaml" and "/abs//t.yaml" name one task
    (a task_overrides key matches its grid entry however either is written)."""
    from ept.tasks.taskfile import is_task_file

    def fix(value):
        if is_task_file(value):
            return str((base / Path(value).expanduser()).resolve())  # base / an absolute path = that path
        return value

    def fix_grid(grid):
        if not isinstance(grid, dict):
            return grid
        return {k: ([fix(v) for v in vs] if k in ("task", "tasks") and isinstance(vs, list) else vs)
                for k, vs in grid.items()}

    if not isinstance(spec, dict):
        return spec
    spec = dict(spec)
    if "task" in spec:
        spec["task"] = fix(spec["task"])
    if "grid" in spec:
        spec["grid"] = fix_grid(spec["grid"])
    if isinstance(spec.get("grids"), list):
        spec["grids"] = [fix_grid(g) for g in spec["grids"]]
    if isinstance(spec.get("task_overrides"), dict):
        spec["task_overrides"] = {fix(k): v for k, v in spec["task_overrides"].items()}
    return spec


def load_spec(path: str | Path, out: str | Path | None = None, check_data: bool = True) -> Sweep:
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep spec")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from None
    return expand(task_files_from(spec, path.parent), out=out, source=str(path), check_data=check_data)


# ------------------------------------------------------------------------------ state
def stale_keys(run: Run) -> list[str]:
    """The settings in which the run folder's config differs from this run's (fixed keys of the
    spec included); [] when the folder is empty or holds this very run."""
    from ept.training.rundir import RunDir, RunDirError, config_diff, identity, train_defaults

    rd = RunDir(run.config["out"])
    if not rd.config_path.exists():
        return []
    defaults = train_defaults()
    try:
        old = identity(rd.read_config(), defaults)
    except RunDirError as err:
        return [str(err)]
    return config_diff(old, identity(run.config, defaults))


def run_state(run: Run) -> str:
    """finished | failed | partial (has a checkpoint, will resume) | pending | stale (the folder
    holds a run of another config: never reported as finished)."""
    from ept.training.rundir import RunDir

    return "stale" if stale_keys(run) else RunDir(run.config["out"]).status()


@dataclass
class Pace:
    """What a set of runs still needs and how fast they went: a forecast, not a promise (a machine
    under load, another CPU or longer rows run at another speed)."""
    steps_left: int  # steps of unfinished runs from their last checkpoint (failed and stale ones too)
    steps_total: int
    seconds_per_step: float | None  # median over the finished runs' last segments (None: none timed)
    timed_runs: int

    def hours(self, workers: int) -> float | None:
        """Wall hours for the steps left at this pace, `workers` runs at a time."""
        return None if self.seconds_per_step is None else self.steps_left * self.seconds_per_step / max(1, workers) / 3600


def pace(runs: list[Run], states: dict[str, str] | None = None) -> Pace:
    """Steps left and the finished runs' seconds a step. A resumed run's results.json times only its
    last segment (from env.json's from_step); a segment under 50 steps, mostly start-up and the
    test pass, is left out. `states`: {run name: run_state} where the caller has them already."""
    from statistics import median

    from ept.training.rundir import RunDir, RunDirError

    left = total = 0
    rates = []
    for run in runs:
        rd, steps = RunDir(run.config["out"]), int(run.config["steps"])
        state = states[run.name] if states and run.name in states else run_state(run)
        total += steps
        if state != "finished":
            left += steps if state == "stale" else steps - int(rd.progress()["reached"] or 0)
            continue
        try:
            wall = (rd.read_results() or {}).get("wall_seconds")
            segment = steps - (json.loads(rd.env_path.read_text()).get("from_step", 0) if rd.env_path.is_file() else 0)
        except (ValueError, RunDirError):  # a damaged env.json or results.json times nothing
            continue
        if wall and segment >= 50:
            rates.append(wall / segment)
    return Pace(left, total, median(rates) if rates else None, len(rates))


def _write_manifest(sweep: Sweep, states: dict[str, str]) -> None:
    from ept.training.rundir import SWEEP_MANIFEST, atomic_write_json

    atomic_write_json(sweep.out / SWEEP_MANIFEST, {
        "name": sweep.name, "spec": sweep.source, "fixed": sweep.fixed, "grid": sweep.grid,
        "runs": [{"name": r.name, "grid": r.grid, "state": states.get(r.name, run_state(r))} for r in sweep.runs],
    })


# ------------------------------------------------------------------------------ one run (in a worker)
def _summary(results: dict | None) -> str:
    if not results or not results.get("test"):
        return ""
    metric = results.get("main_metric")
    return f"test {metric} {results['test'].get(metric, float('nan')):.2f}"


def run_one(config: dict, threads: int | None = None) -> dict:
    """Train one run in this process; never raises. An exception becomes a failed results.json
    (with the traceback in error.txt) so the sweep reports it and does not retry it."""
    import torch

    from ept.training.rundir import RunDir, RunLockedError, StaleRunError
    from ept.training.recipe import TrainConfig, run
    from ept.training.stopping import StopRequested

    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    rd = RunDir(config["out"])
    out = rd.path
    try:
        results = run(TrainConfig.from_dict(config), progress=False)
        status = (results or {}).get("status", "failed")
        return {"out": str(out), "status": status, "error": (results or {}).get("error"),
                "summary": _summary(results), "seconds": round(time.time() - start, 1)}
    except (RunLockedError, StaleRunError) as err:
        # The folder belongs to another writer or another config: report, never write into it.
        return {"out": str(out), "status": "failed", "error": f"{type(err).__name__}: {err}", "summary": "",
                "seconds": round(time.time() - start, 1)}
    except BaseException as err:  # noqa: BLE001 - reported, never swallowed silently
        if isinstance(err, StopRequested) and _POOL_WORKER:
            # SIGTERM / Ctrl-C: the run checkpointed its step. A pool worker would take the next queued
            # run (even with the sweep gone), so this process ends here; the next sweep resumes the run.
            print(f"ept sweep: {out}: {err}; exiting this worker", flush=True)
            os._exit(err.exit_code)
        if isinstance(err, KeyboardInterrupt):
            raise
        tb = traceback.format_exc()
        rd.write_error(tb)
        message = f"{type(err).__name__}: {err}"
        rd.write_results({
            "status": "failed", "error": message, "task": config.get("task"), "method": config.get("method"),
            "backbone": config.get("backbone"), "seed": config.get("seed"), "steps": config.get("steps"),
        })
        return {"out": str(out), "status": "failed", "error": message, "summary": "", "seconds": round(time.time() - start, 1)}


def die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel sends this process SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG),
    so killing a sweep never leaves its workers training as orphans. Elsewhere a no-op; the run
    folder's lock still keeps a rerun from racing an orphan."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_POOL_WORKER = False  # set in the local executor's worker processes


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    import torch

    global _POOL_WORKER
    _POOL_WORKER = True
    if parent_pid is not None:
        die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ------------------------------------------------------------------------------ executors
def _execute_local(todo: list[Run], workers: int, on_done) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    # spawn, not fork: a forked child of a process that already ran torch ops can deadlock.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(run_one, r.config, threads): r for r in todo}
        for fut in as_completed(futures):
            run = futures[fut]
            try:
                outcome = fut.result()
            except BrokenProcessPool:  # a worker ended: a stop signal (checkpointed), or killed (out of memory)
                outcome = {"status": "interrupted", "error": "a worker process ended (a stop signal, or killed: "
                           "out of memory?)", "summary": "", "seconds": None}
            except Exception as err:  # noqa: BLE001 - the worker failed outside the run (unpicklable result)
                outcome = {"status": "failed", "error": f"worker died: {type(err).__name__}: {err}",
                           "summary": "", "seconds": None}
            on_done(run, outcome)


def _execute_ray(todo: list[Run], address: str | None, cpus_per_run: float, gpus_per_run: float, on_done) -> None:
    try:
        import ray
    except ImportError as err:
        raise SweepError("--executor ray needs `pip install 'ray[default]'` (or `pip install ept[ray]`)") from err
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_one)
    threads = max(1, int(cpus_per_run))
    pending = {remote.remote(r.config, threads): r for r in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            run = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - node lost, worker crashed
                outcome = {"status": "failed", "error": f"ray task failed: {type(err).__name__}: {err}",
                           "summary": "", "seconds": None}
            on_done(run, outcome)


def execute(sweep: Sweep, workers: int = 1, executor: str = "local", address: str | None = None,
            retry_failed: bool = False, cpus_per_run: float = 1, gpus_per_run: float = 0,
            log=print) -> dict[str, str]:
    """Run what is not finished; returns {run name: final state}. Progress: done / failed / left."""
    if executor not in ("local", "ray"):
        raise SweepError(f"executor={executor!r}; allowed: local, ray")
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    from ept.training.rundir import RunDir

    states = {r.name: run_state(r) for r in sweep.runs}
    stale = {r.name: stale_keys(r) for r in sweep.runs if states[r.name] == "stale" and not r.config.get("overwrite")}
    if stale:  # checked before anything runs: a changed spec never passes for the old results
        lines = [f"{name}: {'; '.join(diff)}" for name, diff in stale.items()]
        raise SweepError(f"{len(stale)} run folder(s) under {sweep.out} hold runs of a different config:\n  - "
                         + "\n  - ".join(lines[:20]) + "\ngive the sweep another `out` (or --out), or set "
                         "`overwrite: true` in the spec to replace them")
    todo = [r for r in sweep.runs if states[r.name] in ("pending", "partial", "stale")
            or (retry_failed and states[r.name] == "failed")]
    for r in todo:
        if states[r.name] == "failed":  # explicit --retry-failed: clear the old failure
            RunDir(r.config["out"]).clear_failure()
    sweep.out.mkdir(parents=True, exist_ok=True)
    _write_manifest(sweep, states)
    total = len(sweep.runs)
    counts = {"finished": sum(s == "finished" for s in states.values()),
              "failed": sum(s == "failed" for s in states.values()) if not retry_failed else 0,
              "interrupted": 0}
    log(f"ept sweep: {total} runs | {counts['finished']} already finished | "
        f"{sum(s == 'failed' for s in states.values())} failed before"
        f"{' (retrying)' if retry_failed else ' (not retried; --retry-failed to rerun)'} | "
        f"{len(todo)} to run with {executor} executor")
    if not todo:
        return states

    def on_done(run: Run, outcome: dict) -> None:
        status = outcome["status"] if outcome["status"] in ("finished", "interrupted") else "failed"
        counts[status] += 1
        left = total - sum(counts.values())
        if status == "interrupted":  # nothing on disk says failed: the next sweep resumes it
            states[run.name] = run_state(run)
            at = RunDir(run.config["out"]).progress()["reached"] or 0
            detail = f"interrupted, not failed: {outcome['error']}; the next sweep resumes it from step {at}"
        else:
            states[run.name] = status
            detail = outcome.get("summary") if status == "finished" else f"FAILED: {outcome.get('error')}"
        secs = f" ({outcome['seconds']}s)" if outcome.get("seconds") is not None else ""
        log(f"[{counts['finished']} done / {counts['failed']} failed / {left} left] {run.name}: {detail}{secs}")
        _write_manifest(sweep, states)

    if executor == "local":
        _execute_local(todo, workers, on_done)
    else:
        _execute_ray(todo, address, cpus_per_run, gpus_per_run, on_done)
    return states
