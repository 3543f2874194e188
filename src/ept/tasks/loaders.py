"""Load a task from local files (original formats) or the Hugging Face hub, then split it.

    from ept.tasks import load_task
    data = load_task("rte", data_dir="../shared/data")      # local files, paper split protocol
    data = load_task("rte", source="hub")                     # nyu-mll/glue (needs internet)

The data directory is `data_dir`, else $EPT_DATA_DIR, else `../shared/data` relative to the
current directory, else relative to the repository root. Each task lives in `<data_dir>/<task>/`.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ept.tasks.catalog import get_task
from ept.tasks.readers import READ
from ept.tasks.spec import DataError, Example, LocalFile, RowError, TaskData, TaskSpec
from ept.tasks.splits import PROTOCOLS, RawSplits, apply_protocol, few_shot

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_DIR = "../shared/data"
COMPLETE_FRACTION = 0.98  # a local train within 2% of the official size counts as the full set
ROLES = ("train", "eval", "dev")


class MissingDataError(DataError, FileNotFoundError):
    """No local files for a task, or no default data directory: "auto" may try the hub."""


class DataDirError(MissingDataError):
    """An explicitly given data directory (--data-dir, $EPT_DATA_DIR) does not exist: never falls back."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir`, else $EPT_DATA_DIR, else ../shared/data from the cwd, then from the repo root."""
    if data_dir is None:
        data_dir = os.environ.get("EPT_DATA_DIR") or None
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataDirError(f"data directory {str(path)!r} does not exist (from --data-dir / EPT_DATA_DIR)")
        return path.resolve()
    for path in (Path.cwd() / DEFAULT_DATA_DIR, REPO_ROOT / DEFAULT_DATA_DIR):
        if path.is_dir():
            return path.resolve()
    raise MissingDataError(f"no data directory: pass --data-dir, set EPT_DATA_DIR, or create {DEFAULT_DATA_DIR} "
                           f"(looked in {Path.cwd() / DEFAULT_DATA_DIR} and {REPO_ROOT / DEFAULT_DATA_DIR})")


# ------------------------------------------------------------------ labels


def canonical_label(spec: TaskSpec, raw: Any, label_map: dict[str, int]) -> int | float | tuple[str, ...]:
    """Raw label -> class index / float score / answers tuple; ValueError says what was expected."""
    if spec.kind == "generation":
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(a, str) and a.strip() for a in raw):
            raise ValueError(f"expected a non-empty list of answer strings, got {raw!r}")
        return tuple(raw)
    if spec.kind == "regression":
        try:
            score = float(raw)
        except (TypeError, ValueError):
            lo, hi = spec.value_range
            raise ValueError(f"expected a numeric score in [{lo}, {hi}], got {raw!r}") from None
        lo, hi = spec.value_range
        if not math.isfinite(score) or not lo <= score <= hi:
            raise ValueError(f"expected a score in [{lo}, {hi}], got {raw!r}")
        return score
    key = ("true" if raw else "false") if isinstance(raw, bool) else str(raw).strip().lower()
    if label_map:
        if key in label_map:
            return label_map[key]
        raise ValueError(f"label {raw!r} not in the label set; expected one of {sorted(label_map)}")
    words = [w.lower() for w in spec.file_label_words]
    if key in words:
        return words.index(key)
    if key.lstrip("-").isdigit() and 0 <= int(key) < len(words):
        return int(key)
    raise ValueError(f"label {raw!r} not in the label set; expected one of {list(spec.file_label_words)} "
                     f"or an index 0..{len(words) - 1}")


# ------------------------------------------------------------------ local files


@dataclass
class FileReport:
    path: str           # relative to the data dir, e.g. "sst2/train.tsv"
    rows: int = 0
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)   # first few bad-row messages
    notes: list[str] = field(default_factory=list)


def task_root(spec: TaskSpec, data_dir: str | os.PathLike | None) -> Path:
    """Where a task's local paths start: a task file's folder, else `<data_dir>/<task>`."""
    if spec.data_root:
        return Path(spec.data_root)
    return resolve_data_dir(data_dir) / spec.name


def display_path(spec: TaskSpec, f: LocalFile) -> str:
    """A file as messages name it: `sst2/train.tsv`, or a task file's data path as written."""
    return f.path if spec.data_root else f"{spec.name}/{f.path}"


def read_file(spec: TaskSpec, root: Path, f: LocalFile, skip_bad_rows: bool) -> tuple[list[Example], FileReport]:
    """All examples of one file. A bad row raises RowError unless `skip_bad_rows`."""
    display = display_path(spec, f)
    report = FileReport(display)
    label_map = {k.lower(): v for k, v in f.label_map}
    examples = []
    for row in READ[f.reader](root / f.path, f, spec.record_keys, display):
        error = row.error
        if error is None:
            try:
                record = dict(row.record, label=canonical_label(spec, row.record["label"], label_map))
                examples.append(spec.to_example(record))
            except (ValueError, TypeError, KeyError, IndexError) as err:
                error = str(err)
        if error is not None:
            if not skip_bad_rows:
                raise RowError(display, row.line, error)
            report.bad_rows += 1
            if len(report.errors) < 3:
                report.errors.append(str(RowError(display, row.line, error)))
        if row.note:
            report.notes.append(row.note)
    report.rows = len(examples)
    if not examples and not report.bad_rows:
        raise DataError(f"{display}: no examples in the file")
    return examples, report


def _present(root: Path, alternative: tuple[LocalFile, ...]) -> bool:
    return all(_usable(root, f.path) for f in alternative)


def _usable(root: Path, name: str) -> bool:
    """True for a readable regular file, False when nothing is there. Anything else (a folder, a
    dangling symlink, a symlink loop, an unreadable file) is a DataError naming it: a damaged file
    must never read as absent, or loading would fall back to another file (e.g. a 32-row sample)."""
    path = root / name
    if not os.path.lexists(path):
        return False
    problem = None
    try:
        mode = os.stat(path).st_mode
    except OSError as err:  # ENOENT through a symlink: it dangles; ELOOP: a symlink loop
        problem = f"a dangling symlink to {os.readlink(path)!r}" if err.errno == errno.ENOENT else err.strerror
    else:
        if stat.S_ISDIR(mode):
            problem = "a folder"
        elif not stat.S_ISREG(mode):
            problem = "not a regular file"
        elif not os.access(path, os.R_OK):
            problem = "not readable (permissions)"
    if problem is None:
        return True
    raise DataError(f"{root.name}/{name}: {problem}; expected a readable file (fix or remove it: "
                    f"a missing file may fall back to another one, a broken one never does)")


def find_local(spec: TaskSpec, root: Path) -> dict[str, tuple[LocalFile, ...] | None]:
    """For each role, the first alternative whose files all exist (or None)."""
    alternatives = {"train": spec.local_train, "eval": spec.local_eval, "dev": spec.local_dev}
    return {role: next((alt for alt in alternatives[role] if _present(root, alt)), None) for role in ROLES}


@dataclass
class LocalRead:
    raw: RawSplits
    chosen: dict[str, tuple[LocalFile, ...]]   # role -> the files read for it
    reports: list[FileReport]
    bad_rows: int = 0

    @property
    def files(self) -> dict[str, tuple[str, ...]]:
        return {role: tuple(f.path for f in files) for role, files in self.chosen.items()}


def read_local(spec: TaskSpec, root: Path, skip_bad_rows: bool = False) -> LocalRead:
    """The task's local files under `root` (`task_root`)."""
    chosen = find_local(spec, root)
    if spec.data_root:  # a task file names exactly its files: a missing one is an error, not a fallback
        named = [f.path for alts in (spec.local_train, spec.local_eval, spec.local_dev) for alt in alts for f in alt]
        absent = [p for p in named if not (root / p).is_file()]
        if absent:
            raise DataError(f"task {spec.name!r}: data file(s) {', '.join(absent)} not found "
                            f"(relative paths start at the task file's folder {root})")
    if not any(chosen.values()):
        roles = (spec.local_train, spec.local_eval, spec.local_dev)
        looked = sorted({f.path for alternatives in roles for alternative in alternatives for f in alternative})
        raise MissingDataError(f"no local files for task {spec.name!r} in {root} (looked for: {', '.join(looked)})")
    raw = RawSplits()
    read = LocalRead(raw, {}, [])
    for role, alternative in chosen.items():
        if alternative is None:
            continue
        examples: list[Example] = []
        role_bad = 0
        for f in alternative:
            part, report = read_file(spec, root, f, skip_bad_rows)
            examples.extend(part)
            read.reports.append(report)
            role_bad += report.bad_rows
            raw.notes.extend(report.notes)
        setattr(raw, role, examples)
        read.chosen[role] = alternative
        if role == "dev":
            raw.dev_name = _describe_files(alternative)
        read.bad_rows += role_bad
        if role == "train":  # skipped bad rows still count: one bad row must not change the protocol
            raw.train_complete = len(examples) + role_bad >= COMPLETE_FRACTION * spec.train_size
    _describe_local(spec, read)
    return read


def counted(spec: TaskSpec, raw: RawSplits, bad_rows: int = 0) -> TaskSpec:
    """A task file without `train_size`: its train file is the official train, and its size (bad
    rows included, as for the built-ins) decides the split rule."""
    if spec.train_size or raw.train is None:
        return spec
    return replace(spec, train_size=len(raw.train) + bad_rows, eval_size=len(raw.eval or []))


def _describe_local(spec: TaskSpec, read: LocalRead) -> None:
    """One note per split role: which files, how many examples, full set or sample."""
    raw, notes = read.raw, []
    eval_name = f"official {spec.hub.eval if spec.hub else 'validation'}"
    # The extra dev set is described by the split protocol, and only when it is used.
    for role, name, official in (("train", "train", spec.train_size), ("eval", eval_name, spec.eval_size)):
        split = getattr(raw, role)
        if split is None:
            if not spec.data_root:  # a task file names the files it has
                notes.append(f"no {name} file locally")
            continue
        if len(split) >= COMPLETE_FRACTION * official:
            size = f"{len(split):,} examples, the full official set"
        else:
            size = f"{len(split):,} examples, a sample of the official {official:,}"
        notes.append(f"{name} = {'+'.join(read.files[role])}: {size}" +
                     "".join(f" ({f.note})" for f in read.chosen[role] if f.note))
    raw.notes[:0] = notes


def _describe_files(files: tuple[LocalFile, ...]) -> str:
    return "+".join(f.path for f in files) + "".join(f" ({f.note})" for f in files if f.note)


def _source_string(root: Path, files: dict[str, tuple[str, ...]]) -> str:
    parts = "; ".join(f"{role}: {'+'.join(names)}" for role, names in files.items())
    return f"local:{root} ({parts})"


# ------------------------------------------------------------------ hub


def read_hub(spec: TaskSpec) -> RawSplits:
    """The task from the Hugging Face hub (needs internet and `datasets`)."""
    if spec.hub is None:
        raise DataError(f"task {spec.name!r} has no hub source")
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"loading {spec.name!r} from the hub needs the `datasets` package ({err})") from None
    hub = spec.hub
    mapping = dict(hub.fields)
    label_map = {k.lower(): v for k, v in hub.label_map}
    raw = RawSplits(train_complete=True, notes=[f"hub: {hub.describe()}"])
    for role, split in (("train", hub.train), ("eval", hub.eval), ("dev", hub.dev)):
        if split is None:
            continue
        try:
            rows = datasets.load_dataset(hub.path, hub.name, split=split)
        except Exception as err:  # noqa: BLE001 - network, auth, missing split: all user-facing
            raise DataError(f"could not load {hub.describe()} split {split!r} from the hub: {err}") from None
        if hub.filter:
            column, value = hub.filter
            keep = lambda r: r[column] == value  # noqa: E731
            rows = rows.filter(keep) if hasattr(rows, "filter") else [r for r in rows if keep(r)]
        examples = []
        for i, row in enumerate(rows):
            try:
                record = {k: _dotted(row, mapping.get(k, k)) for k in spec.record_keys}
                record["label"] = canonical_label(spec, record["label"], label_map)
                examples.append(spec.to_example(record))
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"hub {hub.describe()} split {split!r} row {i}: {err}") from None
        setattr(raw, role, examples)
    raw.dev_name = f"{hub.describe()} {hub.dev}" if hub.dev else ""
    return raw


def _dotted(row: Any, key: str) -> Any:
    for part in key.split("."):
        row = row[part]
    return row


# ------------------------------------------------------------------ public


def load_task(name: str | TaskSpec, data_dir: str | os.PathLike | None = None, seed: int = 42, few_shot_k: int | None = None,
              skip_bad_rows: bool = False, source: str = "auto", sample_seed: int | None = None,
              split_protocol: str = "b1", template: str | None = None) -> TaskData:
    """Train / validation / test examples of a task in the paper's split protocol.

    seed: the split protocol's seed (validation/test never depend on anything else).
    source: "auto" (local files under <data_dir>/<task> if any, else the hub), "local", "hub".
    few_shot_k: keep k training examples per class (paper §5.2), drawn with `sample_seed`
      (`ept train` passes the run seed, so each run of Table 3 draws its own sample; default: `seed`).
    split_protocol: "b1" (the text of Appendix B.1) or "table5" (Table 5's sizes where they differ).
    skip_bad_rows: skip malformed rows (counted in `bad_rows`) instead of raising RowError.
    template: a named template of the task (`TaskSpec.template_names`; None / "t5": the T5 one).
    """
    spec = (name if isinstance(name, TaskSpec) else get_task(name)).with_template(template)
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"unknown source {source!r}; allowed: auto, local, hub")
    if split_protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {split_protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    read: LocalRead | None = None
    if source in ("auto", "local"):
        try:
            root = task_root(spec, data_dir)
            read = read_local(spec, root, skip_bad_rows)
        except DataDirError:
            raise
        except MissingDataError as err:
            if source == "local":
                raise
            local_error = err
    if read is not None:
        raw, bad_rows = read.raw, read.bad_rows
        if bad_rows:
            raw.notes.append(f"skipped {bad_rows} malformed row(s), e.g. " + "; ".join(
                e for r in read.reports for e in r.errors[:1]))
    else:
        try:
            raw, bad_rows = read_hub(spec), 0
        except DataError as err:
            if source == "auto":
                raise DataError(f"{local_error}; the hub fallback failed too: {err}") from None
            raise
    spec = counted(spec, raw, bad_rows)
    split = apply_protocol(spec, raw, seed, split_protocol)
    train, notes = split.train, raw.notes + split.notes
    if read is None:
        where = f"hub:{spec.hub.describe()}"
    else:  # name the extra dev set only when the protocol used it
        where = _source_string(root, {r: f for r, f in read.files.items()
                                                  if r != "dev" or split.rule.startswith("dev")})
    if few_shot_k is not None:
        full, draw = len(train), seed if sample_seed is None else sample_seed
        train = few_shot(train, few_shot_k, draw)
        notes.append(f"few-shot: {len(train)} training examples ({few_shot_k} per class, sample seed {draw}) "
                     f"out of {full:,}")
    if read is None:
        files, complete = (where,), True
    else:
        files, complete = tuple(f"{spec.name}/{f}" for f in read.files.get("train", ())), raw.train_complete
    return TaskData(spec, train, split.validation, split.test, where, notes, bad_rows, files, complete)


def label_distribution(spec: TaskSpec, examples: Iterable[Example]) -> dict[str, int]:
    """Counts by label word (classification), by target bucket (regression), or answers (generation)."""
    counts: dict[str, int] = {}
    for ex in examples:
        if spec.kind == "classification":
            key = spec.label_words[ex.label]
        elif spec.kind == "regression":  # unit buckets [0, 1) ... [4, 5]
            lo, hi = spec.value_range
            start = int(min(ex.label, hi - 1))
            key = f"[{start}, {start + 1}{']' if start + 1 >= hi else ')'}"
        else:
            key = f"{len(ex.answers)} answer(s)"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
