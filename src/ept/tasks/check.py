"""`ept data check`: walk every task's local files, validate every row, report what is there.

Status: complete (the full official train and evaluation sets), partial (some files, or samples),
missing (no files). Every file the task's spec knows about is read, including fallbacks that
are not used, so a malformed row anywhere is reported with its file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ept.tasks.catalog import get_task, task_names
from ept.tasks.loaders import COMPLETE_FRACTION, MissingDataError, _usable, counted, read_file, read_local, task_root
from ept.tasks.spec import DataError, TaskSpec
from ept.tasks.splits import apply_protocol


@dataclass
class TaskCheck:
    name: str
    benchmark: str
    status: str                                   # complete | partial | missing | error
    files: dict[str, str] = field(default_factory=dict)  # role -> "train.tsv+val.tsv (8,551)"
    sizes: dict[str, int] = field(default_factory=dict)  # after the split protocol
    rule: str = ""
    notes: list[str] = field(default_factory=list)
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)      # files in the folder the spec does not name
    fallbacks: list[str] = field(default_factory=list)   # named by the spec, present, not used: validated


def check_task(name: str | TaskSpec, data_dir: Path | None, seed: int = 42) -> TaskCheck:
    """One task (a name, or a task file's spec) checked in `data_dir` (a task file: its own folder)."""
    spec = name if isinstance(name, TaskSpec) else get_task(name)
    check = TaskCheck(spec.name, spec.benchmark, "missing")
    root = task_root(spec, data_dir)
    try:
        read = read_local(spec, root, skip_bad_rows=True)
    except MissingDataError:
        check.notes.append(f"no files in {root}")
        return check
    except DataError as err:  # empty / unreadable file
        check.status, check.errors = "error", [str(err)]
        return check
    raw = read.raw
    spec = counted(spec, raw, read.bad_rows)
    split = apply_protocol(spec, raw, seed)
    shown = ("train", "eval", "dev") if split.rule.startswith("dev") else ("train", "eval")
    used = {role: files for role, files in read.chosen.items() if role in shown}
    for role, files in used.items():
        check.files[role] = f"{'+'.join(f.path for f in files)} ({len(getattr(raw, role)):,})"
    used_paths = {f.path for files in used.values() for f in files}
    check.bad_rows = read.bad_rows
    check.errors = [e for r in read.reports for e in r.errors]
    already_read = {p for names in read.files.values() for p in names}
    check.fallbacks = _validate_fallbacks(spec, root, used_paths, already_read, check)
    check.sizes = {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)}
    check.rule = split.rule
    # A task file that names no evaluation file is whole with its train file: the protocol carves
    # validation and test from it, as the file asks. "partial" is for a built-in missing official rows.
    carved = bool(spec.data_root) and not spec.local_eval and raw.eval is None
    eval_full = carved or (raw.eval is not None and len(raw.eval) >= COMPLETE_FRACTION * spec.eval_size)
    check.status = "complete" if raw.train_complete and eval_full else "partial"
    check.notes = _short_notes(spec, eval_full, raw, used, read)
    if not spec.data_root:  # a task file's folder may hold anything: only the built-ins' folders are listed
        check.unused = [p for p in _present_files(root) if p not in used_paths and p not in check.fallbacks]
    return check


def _validate_fallbacks(spec: TaskSpec, root: Path, used: set[str], already_read: set[str],
                        check: TaskCheck) -> list[str]:
    """Files the spec names that exist but are not used: read them too, so their bad rows show."""
    fallbacks: list[str] = []
    for alternatives in (spec.local_train, spec.local_eval, spec.local_dev):
        for f in (f for alternative in alternatives for f in alternative):
            if f.path in used or f.path in fallbacks:
                continue
            try:
                if not _usable(root, f.path):
                    continue
            except DataError as err:  # a damaged fallback: never silently skipped
                check.errors.append(str(err))
                check.bad_rows += 1
                continue
            fallbacks.append(f.path)
            if f.path in already_read:  # e.g. an extra dev set the protocol did not need
                continue
            try:
                _, report = read_file(spec, root, f, skip_bad_rows=True)
            except DataError as err:
                check.errors.append(str(err))
                check.bad_rows += 1
                continue
            check.bad_rows += report.bad_rows
            check.errors.extend(report.errors)
    return fallbacks


def _short_notes(spec: TaskSpec, eval_full: bool, raw, used, read) -> list[str]:
    notes = []
    if raw.train is None:
        notes.append("no train")
    elif not raw.train_complete:
        notes.append(f"train sample {len(raw.train):,} of {spec.train_size:,}")
    if raw.eval is None and eval_full:  # a task file without an evaluation file
        notes.append("no evaluation file: validation and test are carved from train")
    elif raw.eval is None:
        notes.append("no official validation")
    elif not eval_full:
        notes.append(f"eval sample {len(raw.eval):,} of {spec.eval_size:,}")
    notes.extend(f.note for files in used.values() for f in files if f.note)
    notes.extend(n for r in read.reports for n in r.notes)
    return notes


def _present_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def check_all(data_dir: Path, seed: int = 42) -> list[TaskCheck]:
    return [check_task(name, data_dir, seed) for name in task_names("paper21")]


def format_table(checks: list[TaskCheck]) -> str:
    """A Markdown table, one row per task."""
    head = ("task", "benchmark", "status", "train / val / test", "split rule", "local files (examples)", "notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in checks:
        sizes = " / ".join(f"{c.sizes[k]:,}" for k in ("train", "validation", "test")) if c.sizes else "-"
        files = "; ".join(f"{role}: {v}" for role, v in c.files.items()) or "-"
        notes = list(c.notes)
        if c.bad_rows:
            notes.append(f"{c.bad_rows} malformed row(s)")
        if c.fallbacks:
            notes.append(f"{len(c.fallbacks)} unused fallback file(s) validated")
        if c.unused:
            notes.append("ignored: " + ", ".join(c.unused))
        row = (c.name, c.benchmark, c.status, sizes, c.rule or "-", files, "; ".join(notes) or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
