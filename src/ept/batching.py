"""Tokenise a split once, then pad each batch to its own longest row (dynamic padding).

Tokenisation happens here, at setup, never in the training loop. Truncations are counted so a
run can report how much text the max length cut.
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


def _segments(example, kind: str):
    """Encoders read the raw fields (`encoder_segments`); seq2seq models the text-to-text source."""
    if kind == "encoder" and example.fields:
        return encoder_segments(example.fields)
    return example.source, None


def encode(tokenizer, examples, kind: str, max_length: int) -> Encoded:
    if kind == "causal":  # source + answer cue, target ids apart (ept.causal)
        from ept.causal import encode_causal

        return encode_causal(tokenizer, examples, max_length)
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
    """Pad to the longest row in this batch; seq2seq targets padded with -100."""
    inputs = [{k: v for k, v in f.items() if k not in ("labels", "index")} for f in features]
    batch = dict(tokenizer.pad(inputs, padding="longest", return_tensors="pt"))
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


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
