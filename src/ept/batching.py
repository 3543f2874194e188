"""Pad each batch of tokenised rows to its own longest row (dynamic padding), and the batch orders.

Rows are tokenised once, at setup, never in the training loop, by their backbone kind
(`ept.kinds.encode`), which counts truncations so a run can report how much text the max
length cut.

Sentence pairs on an encoder are encoded either jointly (`cross`: `[CLS] a [SEP] b [SEP]`, token
types 0/1) or separately (`siamese`: each side its own `[CLS] x [SEP]`, as sentence-transformers
models were trained; `ept.kinds.encoder.encode_pairs`). A siamese batch stacks the B side-A rows and then the B side-B rows into one
(2B, L) batch, so both sides take ONE backbone pass; `batch["pair_rows"] = B` marks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
