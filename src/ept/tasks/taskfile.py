"""Task files: a task as data (YAML or JSON), read into the same `TaskSpec` the built-in tasks use.

    name: tickets
    fields: [subject, body]                       # input columns, in input order
    template: "tickets subject: {subject} body: {body}"
    label: {column: priority, words: {urgent: urgent, routine: routine}}
    data: {train: tickets.csv, eval: tickets-test.csv}

`ept train --task tickets.yaml`, `ept eval RUN --task tickets.yaml`, sweep specs, `ept data
describe|check tickets.yaml`: everywhere a task name goes (`resolve_task`). A run keeps the file's
*content* (`TrainConfig.task_spec`; its identity hashes it), so editing the file makes a finished
run stale and moving it does not. Every key is checked here, by one path, and a bad one is ONE
line naming the file, the key, the value and what is allowed (`TaskFileError`); the data's
problems (a missing column, a label value with no word) are named by the loaders with the data
file and line. README "Your own task" walks through one; `ept data export-task NAME` writes a
built-in task in this form (`export_task`).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, fields as dc_fields
from pathlib import Path
from typing import Any

from ept.tasks.spec import (BENCHMARKS, DEFAULT_TEMPLATE, KINDS, READERS, T5_ANSWER_CUE, TABLE_FORMATS, DataError,
                            HubSource, LocalFile, TaskSpec, Template, is_pair_task, stsb_string)

SUFFIXES = (".yaml", ".yml", ".json")
KEYS = ("name", "kind", "benchmark", "doc", "fields", "extra", "preprocess", "group", "template", "answer_cue", "templates",
        "label", "target", "metrics", "main_metric", "max_length", "data", "hub", "split", "train_size",
        "max_train", "prefer_dev", "pair", "version")
LABEL_KEYS = ("column", "words", "range", "anchors")
TEMPLATE_KEYS = ("format", "answer_cue", "label_words", "doc")
DATA_ROLES = ("train", "eval", "dev", "validation", "test")
DATA_KEYS = DATA_ROLES + ("format",)
HUB_KEYS = ("path", "name", "train", "eval", "validation", "filter")
FILE_KEYS = ("path", "format", "reader", "columns", "header", "skip_first_if", "fields", "label_map",
             "repair_missing_tab", "note")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["pearson", "spearman"],
                   "generation": ["squad_f1", "squad_em"]}


class TaskFileError(DataError):
    """A task file that cannot be used: one line naming the file, the key and what is allowed."""


def is_task_file(ref: Any) -> bool:
    """A task reference that names a file (by its suffix) rather than a registered task."""
    return isinstance(ref, str) and ref.lower().endswith(SUFFIXES)


@dataclass(frozen=True)
class TaskFile:
    path: Path          # absolute
    content: dict       # as parsed: what a run keeps and its identity hashes
    spec: TaskSpec


def read_task_file(path: str | Path) -> TaskFile:
    """Parse and validate a task file."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskFileError(f"{path}: no such task file (a task is a registered name, `ept ls`, or a "
                            f"{'/'.join(SUFFIXES)} file)")
    text = path.read_text(encoding="utf-8-sig")
    try:
        content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise TaskFileError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                            f"{' '.join(str(err).split())}") from None
    path = path.resolve()
    return TaskFile(path, content, spec_from_content(content, path.parent, str(path)))


def resolve_task(ref: str | TaskSpec, base: str | Path | None = None) -> TaskSpec:
    """A registered task's spec by name or alias, or a task file's (a relative path from `base`)."""
    if isinstance(ref, TaskSpec):
        return ref
    if is_task_file(ref):
        return read_task_file(Path(base or ".") / Path(ref).expanduser()).spec
    from ept.tasks.catalog import get_task

    return get_task(ref)


# ------------------------------------------------------------------ content -> TaskSpec
class _Checker:
    """Reads keys of one task file; every error names the file and the key."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, problem: str) -> TaskFileError:
        return TaskFileError(f"{self.where}: {key}: {problem}" if key else f"{self.where}: {problem}")

    def mapping(self, value, key: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            what = "a task file is a mapping" if not key else "expected a mapping"
            raise self.fail(key, f"{what} with keys {', '.join(allowed)}, got {value!r:.60}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else str(unknown[0]),
                            f"unknown key; allowed: {', '.join(allowed)}")
        return value

    def text(self, value, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r:.60}")
        return value

    def texts(self, value, key: str) -> list[str]:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"expected a string or a non-empty list of strings, got {value!r:.60}")
        return [self.text(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def count(self, value, key: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value!r:.60}")
        return value

    def choice(self, value, key: str, allowed) -> str:
        if value not in allowed:
            raise self.fail(key, f"{value!r:.60} is not allowed; allowed: {', '.join(allowed)}")
        return value


def spec_from_content(content: Any, base: Path, where: str) -> TaskSpec:
    """The TaskSpec of a task file's content; local paths relative to `base` (the file's folder)."""
    c = _Checker(where)
    content = c.mapping(content, "", KEYS)
    for required in ("name", "fields", "template"):
        if required not in content:
            raise c.fail(required, "missing (a task file needs name, fields, template and data or hub)")
    name = c.text(content["name"], "name")
    if not NAME.match(name):
        raise c.fail("name", f"{name!r}: expected lower-case letters, digits, _ and - (it names run folders)")
    kind = c.choice(content.get("kind", "classification"), "kind", KINDS)
    columns = _columns(c, content["fields"])
    extra = c.texts(content.get("extra", []), "extra") if content.get("extra") else []
    group = content.get("group", "")
    if group and group not in extra:
        raise c.fail("group", f"{group!r} must be one of the extra keys {extra}")
    keys = tuple(columns) + tuple(extra)
    template = _template(c, content["template"], "template", keys)
    answer_cue = content.get("answer_cue", T5_ANSWER_CUE)
    if not isinstance(answer_cue, str):
        raise c.fail("answer_cue", f"expected a string (may be empty), got {answer_cue!r:.60}")
    label = _label(c, content, kind)
    templates = _named_templates(c, content.get("templates", {}), keys, len(label["words"]))
    metrics = _metrics(c, content, kind)
    local, hub = _sources(c, content, base, columns, label)
    splits, sizes = _split(c, content.get("split"), local, content.get("data"))
    preprocess = content.get("preprocess", "")
    if preprocess:
        from ept.tasks.templates import PREPROCESSORS

        c.choice(preprocess, "preprocess", PREPROCESSORS.names())
    try:
        return TaskSpec(
            name, c.choice(content.get("benchmark", "others"), "benchmark", BENCHMARKS), kind, template,
            tuple(columns), label_words=label["words"], anchor_words=label["anchors"], value_range=label["range"],
            metrics=tuple(metrics), main_metric=c.choice(content.get("main_metric", metrics[0]), "main_metric", metrics),
            max_length=c.count(content.get("max_length", 256), "max_length", 8), extra=tuple(extra),
            preprocess=preprocess, group_key=group,
            train_size=c.count(content.get("train_size", 0), "train_size", 0),
            max_train=c.count(content["max_train"], "max_train") if content.get("max_train") is not None else None,
            hub=hub, local_train=local.get("train", ()), local_eval=local.get("eval", ()),
            local_dev=local.get("dev", ()), prefer_dev=_flag(c, content, "prefer_dev"),
            pair=_flag(c, content, "pair"), version=c.count(content.get("version", 1), "version"),
            reference=f"task file {Path(where).name}", doc=str(content.get("doc", "")),
            data_root=str(base), splits=splits, split_sizes=sizes, templates=templates, answer_cue=answer_cue)
    except ValueError as err:  # TaskSpec's own checks (kept in one place)
        raise TaskFileError(f"{where}: {err}") from None


def _flag(c: _Checker, content: dict, key: str) -> bool:
    value = content.get(key, False)
    if not isinstance(value, bool):
        raise c.fail(key, f"expected true or false, got {value!r:.60}")
    return value


def _columns(c: _Checker, value) -> dict[str, str]:
    """`fields`: a list of column names, or a mapping field name -> column."""
    if isinstance(value, list):
        value = {c.text(v, f"fields[{i}]"): v for i, v in enumerate(value)}
    if not isinstance(value, dict) or not value:
        raise c.fail("fields", f"expected a list of input columns or a mapping field -> column, got {value!r:.60}")
    for key, column in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise c.fail("fields", f"field name {key!r}: expected a name a template can use ({{name}})")
        c.text(column, f"fields.{key}")
    return value


def _template(c: _Checker, text, key: str, keys: tuple[str, ...]) -> str:
    """A str.format template over the task's fields (the built-in tasks' engine)."""
    text = c.text(text, key)
    try:
        used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as err:
        raise c.fail(key, f"{text!r:.80} is not a valid template ({err}); write fields as {{name}}, braces as {{{{ }}}}") from None
    for f in used:
        if f not in keys:
            raise c.fail(key, f"{{{f}}} is not a field of this task; fields: {', '.join(keys)}")
    if not used:
        raise c.fail(key, f"{text!r:.80} uses no field; write fields as {{name}}, e.g. {{{keys[0]}}}")
    return text


def _named_templates(c: _Checker, value, keys: tuple[str, ...], n_labels: int) -> tuple[Template, ...]:
    """`templates: {NAME: "format"}` or `{NAME: {format, answer_cue, label_words}}`: alternatives to
    `template` (which is the "t5" one), chosen with `--template NAME` (e.g. one for decoder-only LMs)."""
    out = []
    for name, entry in c.mapping(value, "templates", tuple(value) if isinstance(value, dict) else ()).items():
        key = f"templates.{name}"
        if not isinstance(name, str) or not NAME.match(name) or name == DEFAULT_TEMPLATE:
            raise c.fail(key, f"template name {name!r}: lower-case letters, digits, _ and -, not {DEFAULT_TEMPLATE!r} "
                         f"(the name of `template`)")
        entry = {"format": entry} if isinstance(entry, str) else c.mapping(entry, key, TEMPLATE_KEYS)
        cue = entry.get("answer_cue", "")
        if not isinstance(cue, str):
            raise c.fail(f"{key}.answer_cue", f"expected a string (may be empty), got {cue!r:.60}")
        words = tuple(c.texts(entry["label_words"], f"{key}.label_words")) if "label_words" in entry else ()
        if words and len(words) != n_labels:
            raise c.fail(f"{key}.label_words", f"{len(words)} words; the task has {n_labels} labels (same order)")
        out.append(Template(name, _template(c, entry.get("format"), f"{key}.format", keys), cue, words,
                            doc=str(entry.get("doc", ""))))
    return tuple(out)


def _label(c: _Checker, content: dict, kind: str) -> dict:
    """label_words, anchors, range, the label column and the raw value -> index map."""
    out = {"words": (), "anchors": (), "range": (), "column": "label", "map": ()}
    if kind == "generation":
        if "label" in content:
            raise c.fail("label", "a generation task names its answer column with `target`, not `label`")
        out["column"] = c.text(content.get("target", "answer"), "target")
        return out
    if "target" in content:
        raise c.fail("target", f"only generation tasks have a target column; a {kind} task has `label`")
    if "label" not in content:
        raise c.fail("label", f"missing: a {kind} task needs label: {{column: ..., "
                     + ("words: {value: word, ...}}}" if kind == "classification" else "range: [lo, hi]}}"))
    label = c.mapping(content["label"], "label", LABEL_KEYS)
    out["column"] = c.text(label.get("column", "label"), "label.column")
    if kind == "regression":
        lo, hi = _range(c, label.get("range"))
        anchors = c.texts(label.get("anchors", ["low", "high"]), "label.anchors")
        if len(anchors) != 2:
            raise c.fail("label.anchors", f"expected 2 texts (for the low and the high end), got {anchors!r:.60}")
        steps = round((hi - lo) * 5)
        out.update(range=(lo, hi), anchors=tuple(anchors), words=tuple(stsb_string(lo + i / 5) for i in range(steps + 1)))
        return out
    words = label.get("words")
    if isinstance(words, list):  # the data holds the word itself, or its index
        out["words"] = tuple(c.text(w, f"label.words[{i}]") for i, w in enumerate(words))
    elif isinstance(words, dict) and words:  # raw value -> word; several values may share a word
        unique = list(dict.fromkeys(c.text(w, f"label.words.{v}") for v, w in words.items()))
        out["words"] = tuple(unique)
        out["map"] = tuple((str(v).strip().lower() if not isinstance(v, bool) else str(v).lower(), unique.index(w))
                           for v, w in words.items())
    else:
        raise c.fail("label.words", f"expected a mapping value -> label word, or a list of words, got {words!r:.60}")
    if len(out["words"]) < 2:
        raise c.fail("label.words", f"a classification task needs at least 2 label words, got {list(out['words'])}")
    return out


def _range(c: _Checker, value) -> tuple[float, float]:
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not value[0] < value[1] or abs(value[0] * 5 - round(value[0] * 5)) > 1e-9:
        raise c.fail("label.range", f"expected [lo, hi] with lo < hi and lo a multiple of 0.2 (targets are "
                     f"rounded to 0.2 steps), got {value!r:.60}")
    return float(value[0]), float(value[1])


def _metrics(c: _Checker, content: dict, kind: str) -> list[str]:
    from ept.tasks.metrics import METRICS

    metrics = c.texts(content.get("metrics", DEFAULT_METRICS[kind]), "metrics")
    for i, m in enumerate(metrics):
        if m not in METRICS:
            raise c.fail(f"metrics[{i}]", f"unknown metric {m!r}; allowed: {', '.join(METRICS.names())}")
    return metrics


def _sources(c: _Checker, content: dict, base: Path, columns: dict[str, str], label: dict):
    """(role -> alternatives of LocalFiles, HubSource or None): exactly one of `data` and `hub`."""
    if ("data" in content) == ("hub" in content):
        raise c.fail("data", "give exactly one of data (local files) and hub (a hub dataset)")
    mapping = tuple((k, v) for k, v in columns.items() if k != v) + (
        (("label", label["column"]),) if label["column"] != "label" else ())
    if "hub" in content:
        hub = c.mapping(content["hub"], "hub", HUB_KEYS)
        filt = hub.get("filter", ())
        if filt and not (isinstance(filt, dict) and len(filt) == 1):
            raise c.fail("hub.filter", f"expected one {{column: value}} to keep, got {filt!r:.60}")
        return {}, HubSource(c.text(hub.get("path"), "hub.path"), hub.get("name"),
                             train=c.text(hub.get("train", "train"), "hub.train"),
                             eval=c.text(hub.get("eval", "validation"), "hub.eval"),
                             dev=c.text(hub["validation"], "hub.validation") if "validation" in hub else None,
                             filter=tuple(next(iter(filt.items()))) if filt else (), fields=mapping,
                             label_map=label["map"])
    data = content["data"]
    if isinstance(data, (str, list)):
        data = {"train": data}
    data = c.mapping(data, "data", DATA_KEYS)
    if "train" not in data:
        raise c.fail("data.train", "missing: the training file(s)")
    given = "validation" in data or "test" in data
    if given and not ("validation" in data and "test" in data and "eval" not in data and "dev" not in data):
        raise c.fail("data", "give train (+ eval, the official evaluation set: split by the protocol), or train, "
                     f"validation and test (used as they are); got {', '.join(k for k in DATA_ROLES if k in data)}")
    fmt = c.choice(data["format"], "data.format", TABLE_FORMATS) if "format" in data else ""
    # dev: an extra labeled set the protocol may take as validation (FewGLUE dev32, MNLI mismatched)
    roles = {"train": "train", "eval": "eval", "dev": "dev", "test": "eval", "validation": "dev"}
    out = {}
    for key, role in roles.items():
        if key in data:
            files = data[key] if isinstance(data[key], list) else [data[key]]
            out[role] = (tuple(_file(c, f, f"data.{key}[{i}]", fmt, mapping, label["map"]) for i, f in enumerate(files)),)
    return out, None


def _file(c: _Checker, value, key: str, fmt: str, mapping, label_map) -> LocalFile:
    """One data file: a path (read by `datasets` by its suffix or data.format), or a mapping with
    `path` and either `format` or a built-in benchmark `reader` and its options (export-task)."""
    if isinstance(value, str):
        return LocalFile(c.text(value, key), "table", fields=mapping, label_map=label_map, format=fmt)
    entry = c.mapping(value, key, FILE_KEYS)
    path = c.text(entry.get("path"), f"{key}.path")
    reader = c.choice(entry.get("reader", "table"), f"{key}.reader", READERS)
    if reader == "table" and any(k in entry for k in FILE_KEYS[3:]):
        raise c.fail(key, f"{', '.join(k for k in FILE_KEYS[3:] if k in entry)}: options of a benchmark reader; "
                     f"give reader: one of {', '.join(r for r in READERS if r != 'table')}")
    opts = {k: entry[k] for k in ("header", "repair_missing_tab", "note") if k in entry}
    for k in ("columns", "skip_first_if"):
        if k in entry:
            opts[k] = tuple(c.texts(entry[k], f"{key}.{k}"))
    if "fields" in entry:
        opts["fields"] = tuple(c.mapping(entry["fields"], f"{key}.fields", tuple(entry["fields"])).items())
    elif reader == "table":
        opts["fields"] = mapping
    file_map = entry.get("label_map")
    opts["label_map"] = tuple((str(k).lower(), v) for k, v in file_map.items()) if file_map else label_map
    try:
        return LocalFile(path, reader, format=c.choice(entry["format"], f"{key}.format", TABLE_FORMATS)
                         if "format" in entry else fmt, **opts)
    except (TypeError, ValueError) as err:
        raise c.fail(key, str(err)) from None


def _split(c: _Checker, value, local: dict, data) -> tuple[str, tuple[int, int] | tuple]:
    if isinstance(data, dict) and "validation" in data:
        if value is not None:
            raise c.fail("split", "validation and test files are used as they are: drop split, or the files")
        return "given", ()
    if value is None or value == "protocol":
        return "protocol", ()
    sizes = c.mapping(value, "split", ("validation", "test"))
    if "validation" not in sizes:
        raise c.fail("split.validation", "missing: how many training examples to hold out for validation")
    test = c.count(sizes.get("test", 0), "split.test", 0)
    if not test and "eval" not in local:
        raise c.fail("split.test", "missing: how many training examples to hold out for testing (or give data.eval)")
    return "sizes", (c.count(sizes["validation"], "split.validation"), test)


# ------------------------------------------------------------------ TaskSpec -> content (export-task)
def export_task(spec: TaskSpec, root: Path) -> dict:
    """A built-in task as task-file content: the same fields, template, labels, metrics, split rule
    and files (the ones present under `root` = <data_dir>/<task>, with their benchmark readers and
    absolute paths), so that training on it reads the same rows into the same splits."""
    from ept.tasks.loaders import find_local

    content: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "benchmark": spec.benchmark}
    if spec.doc:
        content["doc"] = spec.doc
    content["fields"] = list(spec.fields)
    if spec.extra:
        content["extra"] = list(spec.extra)
    if spec.preprocess:
        content["preprocess"] = spec.preprocess
    if spec.group_key:
        content["group"] = spec.group_key
    content["template"] = spec.source_format
    if spec.answer_cue != T5_ANSWER_CUE:
        content["answer_cue"] = spec.answer_cue
    if spec.templates:
        content["templates"] = {t.name: {"format": t.source_format, **({"answer_cue": t.answer_cue} if t.answer_cue else {}),
                                         **({"label_words": list(t.label_words)} if t.label_words else {})}
                                for t in spec.templates}
    if spec.kind == "classification":
        content["label"] = {"words": list(spec.label_words)}
    elif spec.kind == "regression":
        content["label"] = {"range": list(spec.value_range), "anchors": list(spec.anchor_words)}
    else:
        content["target"] = "label"
    content.update(metrics=list(spec.metrics), main_metric=spec.main_metric, max_length=spec.max_length,
                   train_size=spec.train_size)
    if spec.max_train is not None:
        content["max_train"] = spec.max_train
    if spec.prefer_dev:
        content["prefer_dev"] = True
    if is_pair_task(spec):  # two texts to compare: siamese on an encoder, as the built-in
        content["pair"] = True
    chosen = find_local(spec, root)
    if not chosen["train"]:
        raise DataError(f"task {spec.name!r}: no local training files in {root}; export-task writes the files "
                        f"it finds there (see `ept data check`)")
    data = {"train": [_file_entry(f, root) for f in chosen["train"]]}
    for role in ("eval", "dev"):
        if chosen[role]:
            data[role] = [_file_entry(f, root) for f in chosen[role]]
    content["data"] = data
    return content


def _file_entry(f: LocalFile, root: Path) -> dict:
    defaults = {fl.name: fl.default for fl in dc_fields(LocalFile) if fl.name not in ("path", "reader")}
    entry: dict[str, Any] = {"path": str((root / f.path).resolve()), "reader": f.reader}
    for key, default in defaults.items():
        value = getattr(f, key)
        if value != default:
            entry[key] = dict(value) if key in ("fields", "label_map") else list(value) if isinstance(value, tuple) else value
    return entry


def stored_spec(task: str, task_spec: dict | None = None, task_file: str | None = None) -> TaskSpec:
    """The spec a run config names: a task file's stored content (its local paths from the
    folder the file was read in), else the registered task `task`."""
    if task_spec is None:
        from ept.tasks.catalog import get_task

        return get_task(task)
    base = Path(task_file).parent if task_file else Path.cwd()
    spec = spec_from_content(task_spec, base, task_file or f"task_spec of task {task!r}")
    if spec.name != task:
        raise TaskFileError(f"task {task!r}: its stored task_spec is named {spec.name!r}")
    return spec


def content_digest(task: str, content: dict) -> str:
    """What a run's identity keeps of a task file: the TaskSpec its content reads as, hashed. Not
    the text (a comment, quoting or the order of keys change nothing; the order of label words
    does, it is the label order) and not the path (moving the file changes nothing)."""
    import dataclasses
    import hashlib

    try:
        meaning = {k: v for k, v in dataclasses.asdict(stored_spec(task, content)).items() if k != "data_root"}
    except (ValueError, TypeError):  # unreadable content: its text, as parsed
        meaning = content
    text = json.dumps(meaning, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
