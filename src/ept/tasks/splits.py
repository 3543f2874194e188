"""The split protocol of paper Appendix B.1 (DePT / ATTEMPT `AbstractTask.get`, `split_validation_test`) and few-shot sampling (paper Section 5.2).

Decided by the *official* train size (`TaskSpec.split_rule`), whatever the local files hold:
  train < 10K   -> the official validation set is shuffled and halved: validation / test.
  train < 100K  -> 1K examples sampled from train as validation (removed from train);
                   the official validation set is the test set.
  train >= 100K -> the same with 10K.
Shuffles use `torch.randperm` with a generator seeded by `seed` (DePT `shuffled_indices`), so a
full hub download gives exactly DePT's splits for the same row order.

Local data is often partial (../shared/data/MANIFEST.md). Where the protocol cannot be applied
as written, a documented fallback is used and said in the notes (docs/tasks.md, "Split rule"):
  - train present but only a sample of the official train: validation = the task's extra dev
    set if it has one (FewGLUE dev32, MNLI mismatched), else k = min(protocol k, n // 10)
    examples carved from the sample;
  - `TaskSpec.prefer_dev` (MNLI): the extra dev set is the validation set even with a full
    train (DePT's split map: validation_mismatched / validation_matched);
  - no official validation/test file: a test set of the same size is carved from train too;
  - no train at all: validation = the extra dev set, else the official validation is halved
    (the small-task rule) so that the task can still be evaluated.

`protocol="table5"` follows the sizes of the paper's Table 5 where they differ from the text of
B.1 (`TABLE5`: MRPC, MNLI, HotpotQA, NewsQA, WinoGrande, SciTail, PAWS); every other task is the
same under both. The default stays "b1".

Few-shot samples (§5.2) are drawn from the protocol's train split with their own seed (the run
seed in `ept train`), so the k-shot sample changes with the run while validation/test do not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

import numpy as np

from ept.tasks.spec import Example, TaskSpec

T = TypeVar("T")

PROTOCOLS = ("b1", "table5")
# Paper Table 5's split where it differs from the text of B.1: task -> (rule, what Table 5 lists).
# "halve": the official validation halved (DePT's small-task list) although train is >= 10K;
# "val+test": the official validation whole, and the official *labeled* test set as test;
# "sample": B.1's sampling rule without a task's extra dev set (MNLI: no mismatched).
TABLE5: dict[str, tuple[str, str]] = {
    "mrpc": ("val+test", "3,668 / 408 / 1,725: the official validation, and the labeled MSR test as test"),
    "mnli": ("sample", "382,702 / 10,000 / 9,815: 10K from train, validation_matched as test"),
    "hotpotqa": ("halve", "72,928 / 2,950 / 2,951: the official validation halved"),
    "newsqa": ("halve", "74,160 / 2,106 / 2,106: the official validation halved"),
    "winogrande": ("halve", "40,398 / 633 / 634: the official validation halved"),
    "scitail": ("halve", "23,596 / 652 / 652: the official validation halved"),
    "paws": ("halve", "49,401 / 4,000 / 4,000: the official validation halved"),
}


def shuffled_indices(n: int, seed: int) -> list[int]:
    """DePT's `AbstractTask.shuffled_indices`: torch.randperm with a seeded generator."""
    import torch  # local: keep `import ept.tasks` light

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


@dataclass
class RawSplits:
    """What a source provides before the protocol (official roles, not final splits)."""

    train: list[Example] | None = None    # None: no train file at all
    eval: list[Example] | None = None     # official validation (yelp: test)
    dev: list[Example] | None = None      # extra labeled set (FewGLUE dev32, MNLI mismatched)
    test: list[Example] | None = None     # a labeled official test set (Table 5's MRPC); none read yet
    train_complete: bool = False          # the full official train (hub, or a full local copy)
    dev_name: str = ""                    # where the extra dev set comes from (for notes)
    notes: list[str] = field(default_factory=list)


@dataclass
class Split:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    rule: str                 # short name of what was done, e.g. "1K from train", "val halved"
    notes: list[str]


def protocol_rule(spec: TaskSpec, protocol: str = "b1") -> tuple[str, int, bool]:
    """(rule, k, prefer_dev) of a task under `protocol`: "b1" (Appendix B.1, the default) or
    "table5" (Table 5's sizes where they differ, `TABLE5`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"split_protocol={protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    rule, k = spec.split_rule
    if protocol == "table5" and spec.name in TABLE5:
        override = TABLE5[spec.name][0]
        return (override, 0 if override != "sample" else k, False)
    return rule, k, spec.prefer_dev


def apply_protocol(spec: TaskSpec, raw: RawSplits, seed: int, protocol: str = "b1") -> Split:
    """Train / validation / test following Appendix B.1 (or Table 5) and the fallbacks above."""
    rule, k, prefer_dev = protocol_rule(spec, protocol)
    train = list(raw.train or [])
    notes: list[str] = []
    if spec.splits != "protocol" or (spec.data_root and raw.eval is None and raw.dev is None):
        return task_file_split(spec, raw, seed, k)
    if protocol == "table5" and spec.name in TABLE5:
        notes.append(f"split protocol table5: Table 5 lists {TABLE5[spec.name][1]}")
    if rule == "val+test":
        return _table5_val_test(spec, raw, train, notes)
    if rule == "halve":
        if raw.eval is None and raw.dev is None:
            note = f"no labeled validation file: validation and test are empty ({spec.name} cannot be evaluated)"
            return Split(train, [], [], "no val", [note])
        source, what = (raw.eval, "official validation") if raw.eval is not None else (raw.dev, "extra dev set")
        validation, test = _halve(source, seed)
        why = f"train {spec.train_size:,} < 10K" if spec.train_size < 10_000 else "Table 5"
        notes.append(f"split rule ({why}): {what} ({len(source):,}) halved into "
                     f"validation {len(validation):,} / test {len(test):,} (seed {seed})")
        if raw.eval is None:
            notes.append("official validation missing: halved the extra dev set instead")
        rule = "val halved" if raw.eval is not None else "dev halved"
        return Split(_cap(spec, train, notes), validation, test, rule, notes)

    scale = "< 100K" if k == 1_000 else ">= 100K"
    test = list(raw.eval) if raw.eval is not None else None
    if raw.train and raw.train_complete and not (prefer_dev and raw.dev is not None):
        order = shuffled_indices(len(train), seed)
        validation = [train[i] for i in order[:k]]
        rest = [train[i] for i in order[k:]]
        notes.append(f"split rule (train {spec.train_size:,} {scale}): {len(validation):,} sampled from train as "
                     f"validation (seed {seed}), official validation ({len(test or []):,}) as test")
        if test is None:  # a full train without its validation set: carve the test set too
            test, rest = rest[:k], rest[k:]
            notes.append(f"official validation missing: test = {len(test):,} more examples sampled from train")
        return Split(_cap(spec, rest, notes), validation, test, f"{k // 1000}K from train", notes)

    if raw.dev is not None:
        validation, rule = list(raw.dev), "dev as val"
        why = ("the task prefers its own extra dev set" if prefer_dev and raw.train_complete else
               f"split rule (train {spec.train_size:,} {scale}) samples validation from the full train set, absent here")
        notes.append(f"{why}; validation = the extra dev set ({len(validation):,}: {raw.dev_name}), "
                     f"test = the official validation ({len(test or []):,})")
    elif train:
        carve = min(k, max(1, len(train) // 10)) if len(train) >= 3 else 0
        order = shuffled_indices(len(train), seed)
        validation, rule = [train[i] for i in order[:carve]], "val carved from train sample"
        train = [train[i] for i in order[carve:]]
        notes.append(f"split rule (train {spec.train_size:,} {scale}) wants {k:,} validation examples from the "
                     f"full train; the local train sample has {len(train) + carve:,}, so validation = "
                     f"{carve:,} sampled from it (min({k:,}, n // 10), seed {seed})")
        if test is None:
            test, train, rule = train[:carve], train[carve:], "val+test carved from train sample"
            notes.append(f"no official validation file: test = {len(test):,} more examples from the train sample")
    elif test is not None:
        (validation, test), rule = _halve(test, seed), "no train: val halved"
        notes.append(f"no train split: official validation halved into validation {len(validation):,} / "
                     f"test {len(test):,} (seed {seed}) so the task can still be evaluated")
    else:
        validation, rule = [], "nothing to split"
    if test is None:
        notes.append("no official validation file and nothing to carve a test set from: test is empty")
    return Split(_cap(spec, train, notes), validation, test or [], rule, notes)


def task_file_split(spec: TaskSpec, raw: RawSplits, seed: int, k: int) -> Split:
    """A task file's splits: "given" (the validation and test files as they are), "sizes"
    (validation, and test unless a test/eval file is given, sampled from train with the protocol's
    seeded shuffle), or the protocol without an evaluation file (B.1's fallback for a train with
    no official validation: min(k, n // 10) examples each for validation and test; n // 10 under
    the small-task rule, which would halve an evaluation file there is none of)."""
    train = list(raw.train or [])
    if spec.splits == "given":
        validation, test = list(raw.dev or []), list(raw.eval or [])
        note = f"splits given: validation {len(validation):,} / test {len(test):,} from their files"
        return Split(_cap(spec, train, []), validation, test, "given", [note])
    if spec.splits == "sizes":
        n_val, n_test = spec.split_sizes
        n_test = 0 if raw.eval is not None else n_test
        rule = f"sizes {n_val:,}/{n_test:,} from train"
    else:
        n_val = n_test = min(k, len(train) // 10) if k else len(train) // 10  # halve rule (k = 0): n // 10
        rule = "val+test carved from train"
    if n_val + n_test >= len(train):
        raise ValueError(f"task {spec.name!r}: {n_val:,} validation + {n_test:,} test examples leave no training "
                         f"example of {len(train):,}; give smaller split sizes or an evaluation file")
    order = shuffled_indices(len(train), seed)
    validation = [train[i] for i in order[:n_val]]
    test = [train[i] for i in order[n_val:n_val + n_test]] if raw.eval is None else list(raw.eval)
    rest = [train[i] for i in order[n_val + n_test:]]
    where = "sampled from train" if raw.eval is None else "the evaluation file"
    note = (f"split {rule}: validation {len(validation):,} sampled from train (seed {seed}), "
            f"test {len(test):,} {where}")
    return Split(_cap(spec, rest, []), validation, test, rule, [note])


def _table5_val_test(spec: TaskSpec, raw: RawSplits, train: list[Example], notes: list[str]) -> Split:
    """MRPC in Table 5: the official validation whole, and the labeled official test as test.
    GLUE's test labels are hidden (tsv and hub alike), so without a labeled test file the test
    split is empty and says why: such a run is refused before training, never tested on validation."""
    validation = list(raw.eval or [])
    test = list(raw.test or [])
    if not test:
        notes.append(f"{spec.name}: Table 5's test set is the labeled official test, which is not here (GLUE's "
                     f"test labels are hidden): test is empty; use split protocol b1 to train")
    return Split(_cap(spec, train, notes), validation, test, "val + labeled test", notes)


def _halve(examples: Sequence[T], seed: int) -> tuple[list[T], list[T]]:
    order = shuffled_indices(len(examples), seed)
    half = len(examples) // 2
    return [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]


def _cap(spec: TaskSpec, train: list[Example], notes: list[str]) -> list[Example]:
    if spec.max_train is not None and len(train) > spec.max_train:
        notes.append(f"train truncated to the first {spec.max_train:,} (of {len(train):,}) after the split, as DePT")
        return train[:spec.max_train]
    return train


def few_shot(examples: Sequence[Example], k: int, seed: int) -> list[Example]:
    """k examples per class (paper §5.2), balanced and seeded; returned in a seeded shuffled order.

    Classes come from `Example.label`. A class with fewer than k examples gives all it has.
    Regression and generation examples have no classes: k examples are drawn in total.
    """
    if k <= 0:
        raise ValueError(f"few-shot k must be a positive number of examples per class, got {k}")
    rng = np.random.default_rng(seed)
    by_class: dict[object, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        key = ex.label if isinstance(ex.label, int) and not isinstance(ex.label, bool) else None
        by_class[key].append(i)
    chosen: list[int] = []
    for key in sorted(by_class, key=lambda c: (c is None, c if c is not None else 0)):
        members = by_class[key]
        take = rng.permutation(len(members))[:k]
        chosen.extend(members[j] for j in take)
    order = rng.permutation(len(chosen))
    return [examples[chosen[j]] for j in order]
