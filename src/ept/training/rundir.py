"""One run folder: every path and artifact `ept train` writes, read and written in one place.

    RUN/config.json      the resolved TrainConfig (its identity hash goes into results.json)
    RUN/env.json         versions and machine (ept env), and those of earlier starts it resumed
    RUN/steps.jsonl      one line per optimizer step: loss, mu_t, raw_norm, lr[, grad_norm]
    RUN/eval.jsonl       one line per validation run
    RUN/last/            the resume checkpoint: method, optimizer, rng .safetensors + state.json
    RUN/best/            the best state by the task's main validation metric (checkpoint.save_method)
    RUN/export/          the projected prompt P' and a PEFT adapter (checkpoint.export_prompt)
    RUN/results.json     written once at the end: status, metrics, config_hash
    RUN/eval/            `ept eval` outputs; RUN/tb/ TensorBoard; RUN/error.txt a sweep worker's traceback
    RUN/.lock, RUN/.owner.json   the writer's lock and who holds it

Every JSON file is written atomically; JSONL logs are append-only and a torn last line (a kill or a
full disk mid-write) is detected and dropped on resume. Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ept.atomic_io import atomic_save_tensors, atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)

CONFIG, ENV, RESULTS, ERROR = "config.json", "env.json", "results.json", "error.txt"
STEPS, EVALS = "steps.jsonl", "eval.jsonl"
LAST, BEST, EXPORT, TB, EVAL_DIR = "last", "best", "export", "tb", "eval"
STATE, LAST_METHOD, LAST_OPTIMIZER, LAST_RNG = "state.json", "method.safetensors", "optimizer.safetensors", "rng.safetensors"
LOCK, OWNER = ".lock", ".owner.json"
SWEEP_MANIFEST = "sweep.json"
# TrainConfig fields that do not change a run's numbers: left out of its identity.
NOT_IDENTITY = ("out", "tensorboard", "overwrite", "threads", "compile", "precision_fallback", "task_file",
                "checkpoint_every")
# Fields added after runs existed, left out of the identity while at these values (what every
# earlier run did): the config_hash of a run that does not use them stays what it was.
NEUTRAL_WHEN = {"precision": "auto", "group_by_length": False, "template": "t5", "label_score_eos": True,
                "sink_token": None, "task_spec": None}
# Fields that only change sentence-pair tasks: their defaults in a single-sentence task's identity.
PAIR_KEYS = ("pair_encoding", "pair_head", "pair_fit_examples")
# What a config.json WITHOUT a key means, where that differs from today's default: the value
# the code had before the key existed. Folders from before `pair_encoding` encoded every pair
# jointly, so they are `cross` for train-resume and `ept eval` alike (`RunDir.read_config`).
LEGACY_DEFAULTS = {"pair_encoding": "cross"}


class RunDirError(ValueError):
    """A run folder that cannot be used as asked (broken file, other config, other writer)."""


class RunLockedError(RunDirError):
    """Another process holds the run folder's lock."""


class StaleRunError(RunDirError):
    """The folder holds a run of a different config."""


# Atomic writes live in ept.atomic_io (the foundation layer: `ept fetch` writes with them too).


# ------------------------------------------------------------------------------ reading
def read_json(path, remedy: str = "") -> dict:
    """A JSON file, or one RunDirError naming the file (and what to do) when it is unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: unreadable JSON ({err}); the file is truncated or corrupt"
                          + (f"; {remedy}" if remedy else "")) from None


def read_jsonl(path, repair: bool = False, warn=None) -> list[dict]:
    """The rows of a JSONL log. A last line without its newline, or one that does not parse, is a
    torn write: it is dropped (reported through `warn`), and with `repair` cut from the file. A bad
    line anywhere else is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    rows, torn = [], None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1  # no newline after it
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if last or row is None or not isinstance(row, dict):
            if last or i == len(lines) - 2:
                torn = line
                break
            raise RunDirError(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}; delete the run folder to restart")
        rows.append(row)
    if torn is not None:
        if warn:
            warn(f"{path}: dropped a partial last line (torn write): {torn[:60]!r}")
        if repair:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


# ------------------------------------------------------------------------------ identity
def normalise_path(p) -> str:
    """One spelling per folder: absolute, no trailing slash, no ./ (symlinks kept)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(p))))


def identity(config: dict, defaults: dict | None = None) -> dict:
    """The keys that decide a run's numbers: the config with defaults filled in (so folders written
    before a field existed compare equal), minus `NOT_IDENTITY`, paths normalised."""
    out = {**(defaults or {}), **config}
    for key in NOT_IDENTITY:
        out.pop(key, None)
    for key, value in NEUTRAL_WHEN.items():
        if key in out and out[key] == value:
            del out[key]
    if out.get("task_spec") is not None:  # a task file: its content, hashed (moving the file changes nothing)
        from ept.tasks.taskfile import content_digest

        out["task_spec"] = content_digest(out.get("task"), out["task_spec"])
    if not _is_pair_task(out.get("task"), config.get("task_spec")):
        # The pair settings do not change a single-sentence task: they read as today's defaults
        # (a legacy `cross` too), so the stored hashes of such runs stay what they were.
        base = train_defaults()
        out.update({k: base[k] for k in PAIR_KEYS if k in out})
    if out.get("method") and isinstance(out.get("method_options"), dict):
        from ept.config import canonical_options  # torch-free

        # `{hidden_size: 1}` (ept's default, written by older versions when given) is `{}`: the same
        # run. (Such a folder's stored config_hash, taken on the old spelling, differs; none is compared.)
        out["method_options"] = canonical_options(out["method"], out["method_options"])
    if out.get("data_dir"):
        out["data_dir"] = normalise_path(out["data_dir"])
    if out.get("backbone") and os.path.exists(os.path.expanduser(str(out["backbone"]))):
        out["backbone"] = normalise_path(out["backbone"])
    return out


def _is_pair_task(name, task_spec: dict | None = None) -> bool:
    """Unknown names count as pair tasks: their pair keys stay in the identity (the safe side)."""
    from ept.tasks.spec import is_pair_task
    from ept.tasks.taskfile import stored_spec

    try:
        return is_pair_task(stored_spec(name, task_spec))
    except (KeyError, ValueError, TypeError):
        return True


def config_hash(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each key that differs; a neutral value (left out of an identity) is
    printed as what it is (`precision: 'bf16' -> 'auto'`), not as None."""
    def value(config, k):
        return config.get(k, NEUTRAL_WHEN.get(k))

    return [f"{k}: {value(old, k)!r} -> {value(new, k)!r}" for k in sorted(set(old) | set(new)) if value(old, k) != value(new, k)]


def train_defaults() -> dict:
    """TrainConfig's defaults as config.json spells them (a config.json written before a field
    existed lacks it)."""
    from ept.config import TrainConfig

    return TrainConfig.defaults()


# ------------------------------------------------------------------------------ the folder
class RunDir:
    """The run folder at `path` (any spelling of it: the path is normalised)."""

    def __init__(self, path):
        self.path = Path(normalise_path(path))
        self._lock, self._created = None, False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name) -> Path:
        return self.path / name

    # -------------------------------------------------------------- paths
    config_path = property(lambda self: self.path / CONFIG)
    results_path = property(lambda self: self.path / RESULTS)
    env_path = property(lambda self: self.path / ENV)
    steps_path = property(lambda self: self.path / STEPS)
    evals_path = property(lambda self: self.path / EVALS)
    error_path = property(lambda self: self.path / ERROR)
    last = property(lambda self: self.path / LAST)
    best = property(lambda self: self.path / BEST)
    export = property(lambda self: self.path / EXPORT)
    tb = property(lambda self: self.path / TB)
    state_path = property(lambda self: self.path / LAST / STATE)

    def eval_output(self, task: str, split: str) -> Path:
        return self.path / EVAL_DIR / f"{task}-{split}.json"

    def is_run(self) -> bool:
        return self.config_path.is_file() or self.results_path.is_file()

    # -------------------------------------------------------------- read
    def read_config(self, fill_defaults: bool = False) -> dict:
        if not self.config_path.exists():
            raise FileNotFoundError(f"{self.path}: not a run folder (no {CONFIG})")
        config = {**LEGACY_DEFAULTS, **read_json(self.config_path, f"delete {self.path} to start the run again")}
        return {**train_defaults(), **config} if fill_defaults else config

    def read_results(self) -> dict | None:
        if not self.results_path.exists():
            return None
        return read_json(self.results_path, f"delete it to let the run finish again (it resumes from {LAST}/)")

    def read_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        return read_json(self.state_path, f"delete {self.last} to restart the run from step 0")

    def start_step(self) -> int:
        state = self.read_state()
        return int(state["step"]) if state else 0

    def steps(self) -> list[dict]:
        return read_jsonl(self.steps_path)

    def evals(self) -> list[dict]:
        return read_jsonl(self.evals_path)

    def status(self) -> str:
        """finished | failed | partial (a checkpoint to resume) | pending."""
        try:
            results = self.read_results()
        except RunDirError:
            return "failed"
        if results is not None:
            return "finished" if results.get("status") == "finished" else "failed"
        return "partial" if self.state_path.exists() else "pending"

    def progress(self) -> dict:
        """How far the run got: {"status", "reached" (last checkpoint's step), "steps", "best_step"}."""
        status, state = self.status(), self.read_state() or {}
        try:
            results = self.read_results() or {}
        except RunDirError:  # a torn results.json: the status says "failed"
            results = {}
        try:
            steps = self.read_config().get("steps")
        except (FileNotFoundError, RunDirError):
            steps = results.get("steps")
        best = results.get("best_step", (state.get("best") or {}).get("step"))
        reached = steps if status == "finished" else state.get("step", 0)
        return {"status": status, "reached": reached, "steps": steps, "best_step": best}

    def progress_note(self) -> str | None:
        """'partial (step 20 of 40): best step 10' for a run that has not finished, else None."""
        p = self.progress()
        if p["status"] == "finished":
            return None
        return f"{p['status']} (step {p['reached']} of {p['steps']}): best step {p['best_step']}"

    # -------------------------------------------------------------- write
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def write_env(self, env: dict, step: int = 0) -> None:
        """env.json: the machine and versions of this (re)start, which runs steps `step`+1 on, and
        under "earlier" those of the starts whose steps it kept: a run resumed on another machine
        ran on both (an AVX-512 and an AVX2 CPU round differently); a restart from step 0 drops them."""
        earlier = []
        if step and self.env_path.is_file():
            try:
                old = json.loads(self.env_path.read_text())
            except (OSError, ValueError):
                old = {}
            if old:
                earlier = [e for e in old.pop("earlier", []) + [old] if e.get("from_step", 0) < step]
        atomic_write_json(self.env_path, {**env, "from_step": step, **({"earlier": earlier} if earlier else {})})

    def predictions(self, split: str) -> Path:
        return self.path / f"predictions-{split}.jsonl"

    def write_predictions(self, split: str, rows: list[dict]) -> None:
        """One JSON line per row of `split` (row index, prediction, label), written atomically."""
        atomic_write_text(self.predictions(split), "".join(json.dumps(r) + "\n" for r in rows))

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    def write_error(self, text: str) -> None:
        atomic_write_text(self.error_path, text)

    def clear_failure(self) -> None:
        for path in (self.results_path, self.error_path):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every artifact of a run (for --overwrite); the lock stays held."""
        for name in (CONFIG, ENV, RESULTS, ERROR, STEPS, EVALS):
            (self.path / name).unlink(missing_ok=True)
        for name in (LAST, BEST, EXPORT, TB, EVAL_DIR):
            shutil.rmtree(self.path / name, ignore_errors=True)

    def trim_logs(self, step: int, warn=print) -> None:
        """On resume: cut a torn last line, then drop the lines after `step` (they will be redone)."""
        for path in (self.steps_path, self.evals_path):
            # From step 0 nothing survives: a step-0 evaluation (siamese warm start) is redone.
            rows = [r for r in read_jsonl(path, repair=True, warn=warn) if r.get("step", 0) <= step] if step else []
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    # -------------------------------------------------------------- identity
    def check_identity(self, config: dict, overwrite: bool = False) -> str:
        """'new' (no run here), 'same' (same identity: resume or skip) or 'replaced' (overwritten).
        A different identity without `overwrite` raises StaleRunError naming the keys."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"out={str(self.path)!r} is a file; give a folder for the run")
        if not self.config_path.exists():
            return "new"
        defaults = train_defaults()
        old, new = identity(self.read_config(), defaults), identity(config, defaults)
        if old == new:
            return "same"
        if not overwrite:
            legacy = (" (a folder written before --pair-encoding existed encodes pairs jointly: add "
                      "--pair-encoding cross to resume it)") if old.get("pair_encoding") != new.get("pair_encoding") else ""
            raise StaleRunError(
                f"{self.path} holds a {self.status()} run of a different config ({'; '.join(config_diff(old, new))}){legacy}; "
                f"pass another --out, or --overwrite true (overwrite: true in a spec) to replace it")
        self.clear()
        return "replaced"

    # -------------------------------------------------------------- one writer
    def acquire(self) -> "RunDir":
        """Take the folder's exclusive lock for this process (released by `release` or at exit).
        filelock: flock on Linux/macOS, released by the OS if the process dies."""
        from filelock import FileLock, Timeout

        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"out={str(self.path)!r} is a file; give a folder for the run")
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = self.owner()
            who = (f"pid {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"
                   if owner else "another process")
            raise RunLockedError(f"{self.path} is being written by {who}; wait for it to finish or stop it "
                                 f"(a run folder has one writer at a time)") from None
        self._lock = lock
        atomic_write_json(self.path / OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                              "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[:8]})
        return self

    def owner(self) -> dict | None:
        try:
            return json.loads((self.path / OWNER).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def release(self) -> None:
        """Unlock. A folder this process created and left holding only its lock file (a run that
        failed before writing anything: bad precision, data, backbone) is removed, so no empty
        run folder is left behind."""
        if self._lock is None:
            return
        (self.path / OWNER).unlink(missing_ok=True)
        empty = self._created and [p.name for p in self.path.iterdir()] == [LOCK]
        if empty:  # unlinked while still locked: a process that opens it now makes a new lock file
            (self.path / LOCK).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None
        if empty:
            with contextlib.suppress(OSError):  # something was written there meanwhile: keep it
                self.path.rmdir()

    def __enter__(self) -> "RunDir":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------ many runs
def find_runs(path, strict: bool = True) -> list[RunDir]:
    """The run folders under `path`: the folder itself when it is a run, else the runs of a sweep
    root (in sweep.json's order when present, else every child holding config.json)."""
    root = RunDir(path)
    if root.config_path.exists():
        return [root]
    manifest = root / SWEEP_MANIFEST
    if manifest.exists():
        names = [r["name"] for r in read_json(manifest).get("runs", [])]
        return [RunDir(root / n) for n in names if RunDir(root / n).is_run()]
    found = [RunDir(p.parent) for p in sorted(root.path.glob(f"*/{CONFIG}"))]
    if not found and strict:
        raise FileNotFoundError(f"{root.path}: neither a run folder ({CONFIG}) nor a folder of runs")
    return found

