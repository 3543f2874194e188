"""Tokenise a split once, then pad each batch to its own longest row (dynamic padding).

Tokenisation happens here, at setup, never in the training loop. Truncations are counted so a
run can report how much text the max length cut.

Sentence pairs on an encoder are encoded either jointly (`cross`: `[CLS] a [SEP] b [SEP]`, token
types 0/1) or separately (`siamese`: each side its own `[CLS] x [SEP]`, as sentence-transformers
models were trained). A siamese batch stacks the B side-A rows and then the B side-B rows into one
(2B, L) batch, so both sides take ONE backbone pass; `batch["pair_rows"] = B` marks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A task's formatting lives with the task (ept.tasks): which fields are the two sides of a pair.
from ept.tasks.spec import is_pair_task, pair_sides  # noqa: F401  (re-exported)
from ept.tasks.templates import mark_word  # noqa: F401  (re-exported)


@dataclass
class Encoded:
    features: list[dict]  # one dict of python lists per example
    truncated: int  # examples longer than max_length, cut

    def __len__(self) -> int:
        return len(self.features)


def encoder_segments(fields) -> tuple[str, str | None]:
    """Encoder-only models read raw fields as a [SEP]-joined pair (token types 0/1): the first
    field, then the rest joined (None for a single field). Training and serving both call this."""
    first, rest = fields[0], fields[1:]
    return first, (" ".join(rest) if rest else None)


def _segments(example, kind: str):
    """Encoders read the raw fields (`encoder_segments`); seq2seq models the text-to-text source."""
    if kind == "encoder" and example.fields:
        return encoder_segments(example.fields)
    return example.source, None


def encode_pairs(tokenizer, examples, spec, max_length: int) -> Encoded:
    """Siamese: each side tokenised on its own, `[CLS] side [SEP]`, cut at max_length."""
    sides = [pair_sides(x, spec, i) for i, x in enumerate(examples)]
    features, truncated = [], 0
    if examples:
        a_texts, b_texts = (list(t) for t in zip(*sides))
        full = tokenizer(a_texts + b_texts, truncation=False)["input_ids"]
        n = len(examples)
        truncated = sum(len(full[i]) > max_length or len(full[n + i]) > max_length for i in range(n))
        a, b = (tokenizer(t, truncation=True, max_length=max_length) for t in (a_texts, b_texts))
        for i, x in enumerate(examples):
            features.append({"a": {k: a[k][i] for k in a.keys()}, "b": {k: b[k][i] for k in b.keys()},
                             "labels": x.label, "index": i})
    return Encoded(features, truncated)


def encode(tokenizer, examples, kind: str, max_length: int, pair_encoding: str = "cross", spec=None) -> Encoded:
    """Features of a split. `pair_encoding="siamese"` (needs `spec`, a pair task, an encoder)
    encodes the two sides apart; otherwise pairs are joined with [SEP]."""
    if pair_encoding == "siamese":
        if kind != "encoder" or spec is None:
            raise ValueError(f"pair_encoding=siamese needs an encoder backbone and the task spec (got kind {kind!r})")
        return encode_pairs(tokenizer, examples, spec, max_length)
    if pair_encoding != "cross":
        raise ValueError(f"pair_encoding={pair_encoding!r}; allowed: cross, siamese")
    if kind == "causal":  # source + answer cue, target ids apart (ept.kinds.causal)
        from ept.kinds.causal import encode_causal

        return encode_causal(tokenizer, examples, max_length, *([spec.answer_cue] if spec is not None else []))
    firsts, seconds = zip(*(_segments(x, kind) for x in examples)) if examples else ((), ())
    pair = any(s is not None for s in seconds)
    seconds = [s or "" for s in seconds] if pair else None
    full = tokenizer(list(firsts), seconds, truncation=False)["input_ids"] if examples else []
    truncated = sum(len(ids) > max_length for ids in full)
    enc = tokenizer(list(firsts), seconds, truncation=True, max_length=max_length) if examples else {}
    targets = None
    if kind == "seq2seq" and examples:
        targets = tokenizer([x.target for x in examples], truncation=True, max_length=128)["input_ids"]
    features = []
    for i, x in enumerate(examples):
        f = {k: enc[k][i] for k in enc.keys()}
        if kind == "seq2seq":
            f["labels"] = targets[i]
        else:
            f["labels"] = x.label
        f["index"] = i
        features.append(f)
    return Encoded(features, truncated)


def collate(tokenizer, features: list[dict]) -> dict:
    """Pad to the longest row in this batch; seq2seq targets padded with -100. Siamese features
    become 2B rows (all sides A, then all sides B) padded together: one backbone pass."""
    if features and "a" in features[0]:
        inputs = [f["a"] for f in features] + [f["b"] for f in features]
    else:
        inputs = [{k: v for k, v in f.items() if k not in ("labels", "index")} for f in features]
    batch = dict(tokenizer.pad(inputs, padding="longest", return_tensors="pt"))
    if features and "a" in features[0]:
        batch["pair_rows"] = len(features)
    labels = [f["labels"] for f in features]
    if labels and isinstance(labels[0], list):
        width = max(len(x) for x in labels)
        batch["labels"] = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
    elif labels and labels[0] is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    batch["index"] = torch.tensor([f["index"] for f in features])
    return batch


def batches(tokenizer, encoded: Encoded, batch_size: int):
    """In-order batches (evaluation)."""
    for start in range(0, len(encoded), batch_size):
        yield collate(tokenizer, encoded.features[start:start + batch_size])


def feature_length(feature: dict) -> int:
    """Tokens a row adds to its padded batch: input (+ target ids: seq2seq/causal labels);
    a siamese pair, its longer side."""
    if "a" in feature:
        return max(len(feature["a"]["input_ids"]), len(feature["b"]["input_ids"]))
    labels = feature.get("labels")
    return len(feature["input_ids"]) + (len(labels) if isinstance(labels, list) else 0)


def sorted_batches(tokenizer, encoded: Encoded, batch_size: int, rank: int = 0, world: int = 1):
    """Evaluation batches of rows of similar length, longest first (an out-of-memory shows on the
    first batch): yields (positions of the rows in `encoded`, batch), so the caller puts results
    back in their original order. With `world` > 1, process `rank` gets batches rank, rank+world, ...
    of the one-process sequence: the very same batches (same padding, same numbers), no row twice."""
    order = sorted(range(len(encoded)), key=lambda i: -feature_length(encoded.features[i]))  # stable: ties keep order
    for start in range(rank * batch_size, len(order), batch_size * world):
        rows = order[start:start + batch_size]
        yield rows, collate(tokenizer, [encoded.features[i] for i in rows])


# Steps per length-grouping window: HF Trainer's group_by_length sorts mega-batches of 50 batches.
GROUP_WINDOW = 50


def group_by_length(order: list[list[int]], first_step: int, length, seed: int,
                    window: int = GROUP_WINDOW) -> list[list[int]]:
    """Length-grouped training batches. `order` holds the (random) rows of steps first_step,
    first_step+1, ... in whole windows (first_step % window == 0). Each window's rows are sorted by
    `length(row)` (ties by row), cut into batches of the same sizes, and the batches are put in an
    order drawn from (seed, window index). So a step's batch is a pure function of (seed, step)
    like the random order's, and every window of `window` steps trains on exactly the same rows
    as without grouping, only less padded (hand-written: HF's LengthGroupedSampler draws from a
    stateful generator, and a resumed run must not replay the data order from step 0)."""
    if first_step % window:
        raise ValueError(f"first_step={first_step}: must start a window of {window} steps")
    out = []
    for k in range(0, len(order), window):
        chunk = order[k:k + window]
        rows = sorted((i for batch in chunk for i in batch), key=lambda i: (length(i), i))
        grouped, at = [], 0
        for batch in chunk:
            grouped.append(rows[at:at + len(batch)])
            at += len(batch)
        g = torch.Generator().manual_seed(seed * 100_003 + 50_021 + (first_step + k) // window)
        out.extend(grouped[j] for j in torch.randperm(len(grouped), generator=g).tolist())
    return out


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
