"""The task schema: what one of the 21 tasks *is*, as frozen data (frozen data, as lm-evaluation-harness task configs are).

A `TaskSpec` declares where a task loads from (local files in the benchmark's original format,
or a Hugging Face hub id), its text-to-text template, label words, metrics, official split sizes
(which decide the split protocol of paper Appendix B.1) and max input length. Loaders read files
into *records* (plain dicts with canonical keys: the template's text fields, the extra keys a
named preprocessor needs, and `label`), and `TaskSpec.to_example` turns a record into an
`Example`. No `if task == ...` anywhere: task-specific formatting is a named pure function in
`templates.py`, referenced by `TaskSpec.preprocess`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

KINDS = ("classification", "regression", "generation")
BENCHMARKS = ("glue", "superglue", "mrqa", "others")
READERS = ("tsv", "csv", "jsonl", "label_prefixed", "multirc", "mrqa", "wic_mapo", "table")
# A task file's own data goes through `datasets`' loaders ("table" reader), in one of these formats.
TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")
# How a task's splits are made: the paper's protocol from the official train size (Appendix B.1),
# the validation/test files as they are, or validation/test sizes sampled from train (task files).
SPLITS = ("protocol", "given", "sizes")


class DataError(ValueError):
    """A user-facing data problem: missing/empty file, unknown split, unreadable source."""


class RowError(DataError):
    """A malformed row: names the file, the 1-based line and what was expected."""

    def __init__(self, file: str, line: int, problem: str):
        super().__init__(f"{file}, line {line}: {problem}")
        self.file, self.line, self.problem = file, line, problem


@dataclass(frozen=True)
class Example:
    source: str                    # T5 text-to-text input, e.g. "rte sentence1: ... sentence2: ..."
    target: str                    # label word, 0.2-rounded STS-B number ("3.4"), or answer text
    label: int | float | None      # class index, raw float score (regression), None (generation)
    fields: tuple[str, ...]        # raw text segments (encoders join pairs with [SEP])
    group: str | None = None       # MultiRC question id (one example per answer option)
    answers: tuple[str, ...] = ()  # all gold answers (MRQA: F1/EM take the max over them)


@dataclass(frozen=True)
class LocalFile:
    """One file in its original format, relative to `<data_dir>/<task>/` (".gz" read as gzip)."""

    path: str
    reader: str                                   # one of READERS
    columns: tuple[str, ...] = ()                 # tsv/csv: positional canonical names ("_" = unused)
    header: bool = False                          # tsv/csv: line 1 is a header (names it when no columns)
    skip_first_if: tuple[str, ...] = ()           # drop line 1 only if it equals one of these (yelp "0,1")
    fields: tuple[tuple[str, str], ...] = ()      # (canonical key, key in the file; dotted for nested json)
    label_map: tuple[tuple[str, int], ...] = ()   # raw label -> index when the file codes labels its own way
    repair_missing_tab: bool = False              # tsv: split "<text> <label>" in a row one column short
    note: str = ""                                # what this file is (printed by `ept data check`)
    format: str = ""                              # table: one of TABLE_FORMATS ("" = from the suffix)

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"LocalFile {self.path!r}: unknown reader {self.reader!r}; allowed: {', '.join(READERS)}")
        if self.reader in ("tsv", "csv") and not self.columns and not self.header:
            raise ValueError(f"LocalFile {self.path!r}: a {self.reader} file needs columns= or header=True")


# A split role is a tuple of alternatives; an alternative is a tuple of files that together make
# the split (e.g. sst2 train = train.tsv + train_heldout.tsv). The first alternative whose files
# all exist is used, so a full official download placed in the same folder wins over a sample.
Alternatives = tuple[tuple[LocalFile, ...], ...]


@dataclass(frozen=True)
class HubSource:
    """Where users with internet load the task: a `datasets>=4` compatible (parquet) hub id."""

    path: str
    name: str | None = None
    train: str = "train"
    eval: str = "validation"                      # the official evaluation split (yelp: "test")
    dev: str | None = None                        # an extra labeled split (MNLI: validation_mismatched)
    filter: tuple[str, str] = ()                  # (column, value): keep matching rows (MRQA subset)
    fields: tuple[tuple[str, str], ...] = ()      # (canonical key, hub column; dotted for nested)
    label_map: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        where = f"{self.path}/{self.name}" if self.name else self.path
        return where + (f" [{self.filter[0]}={self.filter[1]}]" if self.filter else "")


# The answer cue a decoder-only model reads after the T5 source ("sst2 sentence: ...\nAnswer:").
T5_ANSWER_CUE = "\nAnswer:"
DEFAULT_TEMPLATE = "t5"


@dataclass(frozen=True)
class Template:
    """A named alternative to a task's T5 template (`--template NAME`): the input as `source_format`
    over the same record keys, the cue a decoder-only model reads after it (empty when the format
    already ends in one, e.g. "...\nSentiment:"), and optionally its own label words (same count,
    same order: index = label). Encoders read the raw fields and ignore templates."""

    name: str
    source_format: str
    answer_cue: str = ""
    label_words: tuple[str, ...] = ()
    doc: str = field(default="", compare=False)


@dataclass(frozen=True)
class TaskSpec:
    """One task as data. `template(record)` renders the model input; see docs/tasks.md."""

    name: str
    benchmark: str                                # glue | superglue | mrqa | others
    kind: str                                     # classification | regression | generation
    source_format: str                            # str.format template over the record's keys
    fields: tuple[str, ...]                       # text keys, in input order -> Example.fields
    label_words: tuple[str, ...] = ()             # classification: index = label; regression: "0.0".."5.0"
    anchor_words: tuple[str, str] = ()            # regression: texts for (score min, score max)
    value_range: tuple[float, float] = ()         # regression: (0.0, 5.0)
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    max_length: int = 256                         # paper B.2: 256, MultiRC 348, MRQA 512
    extra: tuple[str, ...] = ()                   # non-text record keys the preprocessor needs
    preprocess: str = ""                          # named pure function in templates.PREPROCESSORS
    group_key: str = ""                           # record key holding Example.group (MultiRC)
    train_size: int = 0                           # official train size: decides the split rule
    eval_size: int = 0                            # official evaluation split size
    max_train: int | None = None                  # cap after the split (yelp: 100K, as DePT)
    prefer_dev: bool = False                      # validation = the extra dev set even with a full train
    hub: HubSource | None = None
    local_train: Alternatives = ()
    local_eval: Alternatives = ()                 # the official validation (yelp: test) split
    local_dev: Alternatives = ()                  # extra labeled set usable as validation
    aliases: tuple[str, ...] = ()
    version: int = 1
    reference: str = ""
    doc: str = field(default="", compare=False)  # one line for `ept ls` / docs
    templates: tuple[Template, ...] = ()          # named alternatives to the T5 template (`--template`)
    answer_cue: str = T5_ANSWER_CUE               # decoder-only: read after the source, before the target
    template_name: str = DEFAULT_TEMPLATE         # which template `source_format` is (`with_template`)
    data_label_words: tuple[str, ...] = ()        # set by `with_template`: the words the files code labels by
    # ---- task files (ept.tasks.taskfile): where their local paths start, and how they split
    data_root: str = ""                           # the task file's folder ("" = <data_dir>/<name>)
    splits: str = "protocol"                      # one of SPLITS
    split_sizes: tuple[int, int] = ()             # splits="sizes": (validation, test) from train
    pair: bool | None = None                      # two texts to compare (siamese on encoders); None = the rule below

    def __post_init__(self) -> None:
        problems = []
        if self.benchmark not in BENCHMARKS:
            problems.append(f"benchmark {self.benchmark!r} not in {BENCHMARKS}")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} not in {KINDS}")
        if self.kind == "classification" and len(self.label_words) < 2:
            problems.append("a classification task needs at least 2 label_words")
        if self.kind == "regression" and (len(self.anchor_words) != 2 or len(self.value_range) != 2):
            problems.append("a regression task needs anchor_words (2) and value_range (lo, hi)")
        if self.main_metric not in self.metrics:
            problems.append(f"main_metric {self.main_metric!r} not in metrics {self.metrics}")
        if self.train_size < 0 or (self.train_size == 0 and not self.data_root):
            # A task file may leave it 0: its train file's row count is the official size.
            problems.append("train_size (official) must be > 0: it decides the split protocol")
        if self.splits not in SPLITS:
            problems.append(f"splits {self.splits!r} not in {SPLITS}")
        for alternative in self.local_train + self.local_eval + self.local_dev:
            for f in alternative:
                missing = [k for k in self.record_keys if f.columns and k not in f.columns]
                if missing:
                    problems.append(f"{f.path}: columns lack {missing}")
        for t in self.templates:
            if t.label_words and len(t.label_words) != len(self.label_words):
                problems.append(f"template {t.name!r}: {len(t.label_words)} label_words, the task has "
                                f"{len(self.label_words)}")
        names = [t.name for t in self.templates]
        if DEFAULT_TEMPLATE in names or len(set(names)) != len(names):
            problems.append(f"template names {names}: must be distinct and not {DEFAULT_TEMPLATE!r} (the T5 one)")
        if problems:
            raise ValueError(f"task {self.name!r}: " + "; ".join(problems))

    @property
    def file_label_words(self) -> tuple[str, ...]:
        """The label words a data file may spell its labels with (the T5 ones, whatever the template)."""
        return self.data_label_words or self.label_words

    @property
    def template_names(self) -> tuple[str, ...]:
        return (DEFAULT_TEMPLATE,) + tuple(t.name for t in self.templates)

    def with_template(self, name: str | None) -> "TaskSpec":
        """This task read through template `name` ("t5" or None: itself): its source format, answer
        cue and label words replace the T5 ones; everything else (files, splits, metrics) is kept."""
        if name in (None, self.template_name):
            return self
        if name == DEFAULT_TEMPLATE:
            raise ValueError(f"task {self.name!r} is already read through template {self.template_name!r}")
        chosen = {t.name: t for t in self.templates}.get(name)
        if chosen is None:
            raise ValueError(f"task {self.name!r} has no template {name!r}; allowed: {', '.join(self.template_names)}")
        return replace(self, source_format=chosen.source_format, answer_cue=chosen.answer_cue,
                       label_words=chosen.label_words or self.label_words, template_name=name,
                       data_label_words=self.file_label_words)

    @property
    def record_keys(self) -> tuple[str, ...]:
        """Keys a loader must put in each record (text fields, extras, label)."""
        return self.fields + self.extra + ("label",)

    @property
    def split_rule(self) -> tuple[str, int]:
        """Paper Appendix B.1, decided by the official train size: ("halve", 0) or ("sample", k)."""
        if self.train_size < 10_000:
            return "halve", 0
        return "sample", 1_000 if self.train_size < 100_000 else 10_000

    def template(self, record: Mapping[str, Any]) -> str:
        """The text-to-text source for one record (after the task's named preprocessor)."""
        return self._render(self._prepared(record))

    def _render(self, rec: Mapping[str, Any]) -> str:
        """The T5 template squashes all whitespace (its sources are one line); a named template keeps
        its own line breaks ("Review: ...\nSentiment:") and squashes each text field to one line."""
        if self.template_name == DEFAULT_TEMPLATE:
            return _squash(self.source_format.format(**rec))
        flat = {k: _squash(v) if isinstance(v, str) else v for k, v in rec.items()}
        return "\n".join(line.strip() for line in self.source_format.format(**flat).split("\n")).strip()

    def target(self, label: Any) -> str:
        if self.kind == "classification":
            return self.label_words[label]
        if self.kind == "regression":
            return stsb_string(label)
        return label[0]

    def to_example(self, record: Mapping[str, Any]) -> Example:
        """A record whose `label` is already canonical (index / float / answers tuple)."""
        rec = self._checked(record)
        label = rec["label"]
        return Example(
            source=self._render(rec),
            target=self.target(label),
            label=None if self.kind == "generation" else label,
            fields=tuple(_squash(str(rec[k])) for k in self.fields),
            group=str(rec[self.group_key]) if self.group_key else None,
            answers=tuple(label) if self.kind == "generation" else (),
        )

    def render(self, record: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        """(source, fields) of an unlabeled record, exactly as `to_example` renders them: what
        serving feeds the model, so that a served row reads as the same row did in training."""
        rec = self._checked({"label": None, **record})
        return self._render(rec), tuple(_squash(str(rec[k])) for k in self.fields)

    def _checked(self, record: Mapping[str, Any]) -> dict[str, Any]:
        for key in self.fields:  # JSON rows may hold null/objects: never score them as "None"
            if not isinstance(record.get(key), str):
                raise ValueError(f"text field {key!r} must be a string, got {type(record.get(key)).__name__} "
                                 f"{record.get(key)!r}")
            if not record[key].strip():  # caught here, with the file and line, not mid-training
                raise ValueError(f"text field {key!r} is empty; expected some text")
        return self._prepared(record)

    def _prepared(self, record: Mapping[str, Any]) -> dict[str, Any]:
        from ept.tasks.templates import PREPROCESSORS  # local: templates imports nothing from here

        rec = dict(record)
        return PREPROCESSORS.get(self.preprocess)(rec) if self.preprocess else rec


# Tasks with more than two fields that still compare two texts (WiC: two sentences, the word
# marked in both; `ept.tasks.templates.PAIR_SIDES` builds their sides).
PAIR_TASKS_BY_NAME = ("wic",)


def is_pair_task(spec: TaskSpec) -> bool:
    """Two texts to compare: every two-field task (STS-B, MRPC, QQP, RTE, MNLI, QNLI, CB, BoolQ,
    SciTail, PAWS), and WiC with its word marked in both sentences; a task file says so itself
    (`pair:`, default false: two fields are not always two texts to compare). Torch-free: the
    run-folder identity (`ept.training.rundir`) asks it too."""
    if spec.pair is not None:
        return spec.pair
    return spec.name in PAIR_TASKS_BY_NAME or len(spec.fields) == 2


def siamese_applies(backbone_kind: str | None, spec: TaskSpec, pair_encoding: str | None) -> bool:
    """THE rule for siamese pair scoring: asked for, on an encoder, for a pair task that is not
    free text. Scorers (`ept.heads.resolve_pair_encoding`) and the lr default (`ept.config`) ask it."""
    return pair_encoding == "siamese" and backbone_kind == "encoder" and is_pair_task(spec) and spec.kind != "generation"


def pair_sides(example, spec, position: int = 0) -> tuple[str, str]:
    """(side A, side B) of one example of a pair task; a missing or empty side is an error naming
    the row. Training (`ept.kinds.encoder.encode_pairs`) and serving (`ept.serving.server.siamese_sides`) call it."""
    from ept.tasks.templates import PAIR_SIDES  # local: templates imports nothing from here

    if not is_pair_task(spec):
        raise ValueError(f"task {spec.name!r} has fields {spec.fields}: not a sentence-pair task; "
                         f"use pair_encoding=cross")
    expected = len(spec.fields)
    if len(example.fields) != expected:
        raise ValueError(f"task {spec.name!r}, example {position}: a pair needs {expected} fields "
                         f"{spec.fields}, got {len(example.fields)}: {example.fields!r}")
    sides = PAIR_SIDES[spec.name](example.fields) if spec.name in PAIR_SIDES else tuple(example.fields)
    for name, text in zip(("A", "B"), sides):
        if not text.strip():
            raise ValueError(f"task {spec.name!r}, example {position}: side {name} is empty: {example.fields!r}")
    return sides


def stsb_string(score: float) -> str:
    """T5's STS-B target: round to the nearest 0.2 (half to even, as tf.round) with one decimal."""
    if not math.isfinite(score):
        raise ValueError(f"STS-B score must be finite, got {score!r}")
    return f"{round(score * 5) / 5:.1f}"


def _squash(text: str) -> str:
    return " ".join(text.split())


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    source: str                                   # "local:<dir> (...)" or "hub:<id>"
    notes: list[str] = field(default_factory=list)
    bad_rows: int = 0
    # Which file(s) trained it ("cb/fewglue/train.jsonl", or the hub id) and whether they hold the
    # full official train set or a sample: results.json and `ept report` show them.
    train_files: tuple[str, ...] = ()
    train_complete: bool = True

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}
