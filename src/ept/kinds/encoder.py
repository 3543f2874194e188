"""Encoder-only backbones (BERT family, the embedded MiniLM): a prompted sentence embedding scored
against label texts.

- Inputs: `[P'][CLS] x [SEP]` (pairs: `[CLS] a [SEP] b [SEP]`, token types 0/1, the prompt type 0).
  BERT positions are absolute, so a row behind a shorter (masked) prompt is re-based to count
  from its own prompt, exactly as when it runs alone.
- The embedding: the backbone's sentence-embedding recipe (`ept.pooling`) over the input
  positions only; the prompt acts through attention.
- Rank scoring: cosine between the normalised embedding and each label text's embedding over a
  temperature (a verbalizer in embedding space); regression interpolates between two anchor
  texts (`anchor_value`). Each row is scored against its own task's label embeddings.
- Siamese pairs: each side its own row of the same pass (`ept.heads.SiameseScorer` in training;
  `serve` here), the cosine of the two scored by the task's pair head.
"""

from __future__ import annotations

import torch
from torch import nn

from ept.batching import Encoded, encoder_segments
from ept.kinds.base import Kind, Labels, format_result, prepend_prompt
from ept.pooling import pool
from ept.tasks.spec import pair_sides

TEMPERATURE = 0.05  # sentence-transformers' usual scale of 20 for cosine logits


def text_embeddings(model, texts) -> torch.Tensor:
    """Mean-pooled normalised embeddings of plain texts through the (frozen) backbone, no prompt."""
    tok = model.tokenizer(list(texts), padding=True, return_tensors="pt")
    device = next(model.backbone.parameters()).device
    tok = {k: v.to(device) for k, v in tok.items()}
    # Label texts are embedded without dropout: they are fixed targets, not training inputs.
    was_training = model.backbone.training
    model.backbone.eval()
    out = model.backbone(**tok).last_hidden_state
    model.backbone.train(was_training)
    mask = tok["attention_mask"].unsqueeze(-1).to(out.dtype)
    return nn.functional.normalize(((out * mask).sum(1) / mask.sum(1)).float(), dim=-1)


def label_logits(pooled: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine logits (B, C) of pooled inputs (B, e) against label text embeddings (C, e)."""
    return pooled @ text_embeddings.T / TEMPERATURE


def anchor_value(logit: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Encoder regression: lo + sigmoid(cos_hi - cos_lo) (hi - lo)."""
    return lo + torch.sigmoid(logit) * (hi - lo)


def _segments(example):
    """Encoders read the raw fields as a [SEP] pair (`encoder_segments`), else the source."""
    return encoder_segments(example.fields) if example.fields else (example.source, None)


class EncoderKind(Kind):
    name = "encoder"
    absolute_positions = True
    segment_pairs = True

    def __init__(self, model, **options):
        super().__init__(model, **options)
        self._embeddings: dict[tuple[str, ...], torch.Tensor] = {}  # serving: label texts -> (C, e)

    # ------------------------------------------------------------------ rows and inputs
    @staticmethod
    def encode(tokenizer, examples, max_length: int, spec=None, count_truncated: bool = True) -> Encoded:
        """Raw fields as one segment or a [SEP] pair, cut at max_length (`count_truncated`: count
        the rows cut, one more tokenizer call; serving skips it)."""
        firsts, seconds = zip(*(_segments(x) for x in examples)) if examples else ((), ())
        pair = any(s is not None for s in seconds)
        seconds = [s or "" for s in seconds] if pair else None
        full = tokenizer(list(firsts), seconds, truncation=False)["input_ids"] if examples and count_truncated else []
        truncated = sum(len(ids) > max_length for ids in full)
        enc = tokenizer(list(firsts), seconds, truncation=True, max_length=max_length) if examples else {}
        features = [{**{k: enc[k][i] for k in enc.keys()}, "labels": x.label, "index": i} for i, x in enumerate(examples)]
        return Encoded(features, truncated)

    def build_inputs(self, batch: dict, prompt=None, prompt_mask=None) -> dict:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = self.model.backbone.get_input_embeddings()(ids)  # (B, L, e)
        tti = batch.get("token_type_ids")
        if prompt is not None:
            embeds, mask, tti = prepend_prompt(embeds, mask, prompt, prompt_mask, tti)
        kwargs = {"inputs_embeds": embeds, "attention_mask": mask}
        if tti is not None:
            kwargs["token_type_ids"] = tti
        if prompt is not None and prompt_mask is not None:
            # BERT-family positions are absolute: without this, a row whose prompt is padded
            # (shorter than the longest in the batch) would see its real tokens shifted, and differ
            # from the same row run alone. Masked prompt slots take position 0; real prompt rows
            # count 0..n_i-1 and the input continues at n_i, exactly as for the row alone.
            pm = prompt_mask.to(ids.device).long()  # (B, n)
            n_i = pm.sum(1, keepdim=True)  # (B, 1)
            prompt_pos = (pm.cumsum(1) - 1).clamp(min=0)
            input_pos = n_i + torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # (B, L)
            kwargs["position_ids"] = torch.cat([prompt_pos, input_pos], dim=1)
        return kwargs

    def pooled(self, batch: dict, prompt=None, prompt_mask=None, recipes=None) -> torch.Tensor:
        """Sentence embeddings (B, e) fp32 of the input tokens, each row by its recipe (`recipes`,
        one per row; default the backbone's own, `model.pooling`), over the real input only. A
        siamese pair batch holds both sides as rows."""
        if prompt is None:
            prompt = self.model.prompt()
        hidden = self.model.backbone(**self.build_inputs(batch, prompt, prompt_mask)).last_hidden_state
        hidden = hidden[:, hidden.shape[1] - batch["input_ids"].shape[1]:]  # the input positions only
        mask = batch["attention_mask"]
        if recipes is None or len(set(recipes)) == 1:
            return pool(hidden, mask, recipes[0] if recipes else self.model.pooling).float()
        out = torch.empty(hidden.shape[0], hidden.shape[-1], device=hidden.device)
        for recipe in dict.fromkeys(recipes):
            rows = torch.tensor([i for i, r in enumerate(recipes) if r == recipe], device=hidden.device)
            out[rows] = pool(hidden[rows], mask[rows], recipe)
        return out

    # ------------------------------------------------------------------ scoring
    def rank_scores(self, batch: dict, labels: Labels, prompt=None, prompt_mask=None, pooled=None) -> torch.Tensor:
        """(B, C_max) cosine logits of each row against its own label embeddings (`labels`)."""
        if pooled is None:
            pooled = self.pooled(batch, prompt, prompt_mask)
        pooled = nn.functional.normalize(pooled, dim=-1)  # a cosine even if the recipe does not normalise
        return labels.own_columns(label_logits(pooled, torch.cat(labels.tables).to(pooled.device)))

    # ------------------------------------------------------------------ serving
    def prepare_task(self, task) -> str:
        if task.pair_head is not None:
            return "siamese"  # scored from the cosine of its two sides: no label texts
        texts = tuple(task.scorer.texts)
        if texts not in self._embeddings:  # tasks sharing a label set share one embedding pass
            with torch.inference_mode():
                self._embeddings[texts] = text_embeddings(self.model, texts)
        return "embed"

    def serve(self, server, features, tasks):
        flat, flat_tasks, where = expand_sides(features, tasks)
        batch, prompt, mask = server.inputs(flat, flat_tasks)
        emb = self.pooled(batch, prompt, mask, [t.pooling or self.model.pooling for t in flat_tasks])
        plain = [i for i, t in enumerate(tasks) if t.mode != "siamese"]
        out: list[dict | None] = [None] * len(features)
        if plain:
            sub = [tasks[i] for i in plain]
            labels = Labels.of_tasks(sub, lambda t: self._embeddings[tuple(t.scorer.texts)])
            scores = self.rank_scores(None, labels, pooled=emb[[where[i][0] for i in plain]])  # (B, C_max)
            for j, i in enumerate(plain):
                out[i] = _label_result(tasks[i], scores[j, : len(tasks[i].scorer.texts)], features[i]["index"])
        for i, t in enumerate(tasks):
            if t.mode == "siamese":
                a, b = where[i]
                cos = nn.functional.cosine_similarity(emb[a:a + 1], emb[b:b + 1], dim=-1)  # (1,)
                out[i] = _pair_result(t, cos, features[i]["index"])
        return out


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


def expand_sides(features: list[dict], tasks: list) -> tuple[list[dict], list, list[tuple[int, int]]]:
    """Rows for one pass: a plain row as it is, a siamese row as its side A and side B (both
    prompted with its task's prompt). Returns (rows, their tasks, where) with where[i] = (j, k):
    row i's embedding is flat row j, or its sides are flat rows j and k."""
    flat, flat_tasks, where = [], [], []
    for f, t in zip(features, tasks):
        sides = (f["a"], f["b"]) if "a" in f else (f,)
        where.append((len(flat), len(flat) + len(sides) - 1))
        for side in sides:
            flat.append({k: v for k, v in side.items() if k not in ("a", "b", "task")} | {"labels": None, "index": f["index"]})
            flat_tasks.append(t)
    return flat, flat_tasks, where


def _label_result(task, own: torch.Tensor, row: int) -> dict:
    value = None
    if task.spec.kind == "regression":  # the regression scorer's anchors
        lo, hi = task.spec.value_range
        value = float(anchor_value(own[1] - own[0], lo, hi))
    return format_result(task, own.tolist(), row, value)


def _pair_result(task, cos: torch.Tensor, row: int) -> dict:
    """A siamese row through its pair head (`PairHead.logits` / `predict`): "scores" are the head's
    logits (one per label), for regression the cosine of the two sides (the prediction maps it)."""
    head = task.pair_head
    if head.kind == "regression":
        return format_result(task, cos.tolist(), row, float(head.predict(cos)[0]))
    return format_result(task, head.logits(cos)[0].tolist(), row)
