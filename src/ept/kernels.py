"""Mixed-task scoring kernels: one backbone pass over rows of any mix of tasks, one kernel per
backbone kind, chosen through a registry (a new backbone kind registers its own):

    from ept.kernels import KERNELS, Kernel
    class CausalKernel(Kernel): ...
    KERNELS.register("causal", CausalKernel)

A kernel gets the rows' features and their `ServedTask`s, takes the prompts from the server's
`PromptBank` (`server.inputs`), and returns one result dict per row: "task", "prediction",
"label" (classification) and "scores" (one per label of the row's OWN task; not for generation).
The numbers are the task's own scorer's (ept.heads) on a single-task batch: both call the same
functions (`label_logits`, `anchor_value`, `Seq2SeqScorer.max_new_tokens`).

- encoder: each distinct label (or anchor) text set is embedded once, when a task using it is
  added; a pass stacks the label sets of the tasks in it (sum C_t, e), one matmul scores every row
  against every label, and each row keeps its own task's columns. A siamese pair row (an export
  trained with `pair_encoding=siamese`) adds its two sides as two rows of the same pass, each with
  its task's prompt, pooled by the export's recipe; the cosine of the two goes through the
  export's pair head (`PairHead.logits` / `predict`, as `SiameseScorer.predict`).
- seq2seq rank classification: one encoder pass; each row's encoder output is repeated once per
  label of ITS task (sum over rows of C_t decoder rows, no padded label sets) and one decoder pass
  scores them all. Generation-mode tasks are decoded in one `generate` call per max_new_tokens.
"""

from __future__ import annotations

import math

import torch

from ept.heads import _encode_texts, anchor_value, label_logits
from ept.pooling import pool
from ept.registry import Registry


class Kernel:
    """Interface: `prepare_task(task) -> mode` once per added task (cache what does not depend on
    the input), `score(server, features, tasks) -> results` per pass."""

    def __init__(self, model, prefix_cache: bool = True):
        self.model = model
        self.prefix_cache = prefix_cache  # causal kernels: reuse each task's prompt keys/values

    def prepare_task(self, task) -> str:
        raise NotImplementedError

    def score(self, server, features: list[dict], tasks: list) -> list[dict]:
        raise NotImplementedError


def ragged(tasks: list, table_of) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Label tables of the distinct tasks of a pass, and each row's (offset, count) into their
    concatenation: row i owns rows offset[i] .. offset[i]+count[i]-1."""
    order: dict[str, int] = {}
    tables = []
    for t in tasks:
        if t.name not in order:
            order[t.name] = len(tables)
            tables.append(table_of(t))
    counts = torch.tensor([len(x) for x in tables])
    starts = counts.cumsum(0) - counts
    idx = torch.tensor([order[t.name] for t in tasks])
    return tables, starts[idx], counts[idx]


def own_columns(every: torch.Tensor, offset: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, sum C) -> (B, C_max): each row's own task's labels, -inf where a task has fewer."""
    offset, count = offset.to(every.device), count.to(every.device)
    cols = torch.arange(int(count.max()), device=every.device)  # (C_max,)
    valid = cols < count.unsqueeze(1)  # (B, C_max)
    index = (offset.unsqueeze(1) + cols).clamp(max=every.shape[1] - 1)
    return every.gather(1, index).masked_fill(~valid, float("-inf"))


def label_pairs(tasks: list, device):
    """One (row, label) pair per label of each row's OWN task, for rank classification:
    rep (R,) the row, within (R,) the label's index in its task, labels (R, T) token ids padded
    with -100 (columns no pair uses dropped), and a (B, C_max) score table filled with -inf."""
    tables, offset, count = ragged(tasks, lambda t: t.scorer.label_ids())
    width = max(x.shape[1] for x in tables)
    flat = torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-100) for x in tables])
    rep = torch.repeat_interleave(torch.arange(len(tasks)), count)  # (R,) R = sum C_row
    within = torch.arange(len(rep)) - torch.repeat_interleave(count.cumsum(0) - count, count)
    labels = flat[offset[rep] + within]
    labels = labels[:, : int((labels != -100).sum(1).max())].to(device)
    scores = torch.full((len(tasks), int(count.max())), float("-inf"), device=device)
    return rep.to(device), within.to(device), labels, scores


def format_result(task, scores: list[float], row: int, value: float | None = None) -> dict:
    """One row's result from its own task's scores; a NaN/inf score is an error, never output."""
    from ept.serve import RowError

    if not all(math.isfinite(s) for s in scores) or (value is not None and not math.isfinite(value)):
        raise RowError(row, f"task {task.name!r}: the model gave non-finite scores {scores}; check the prompt and backbone")
    spec = task.spec
    if spec.kind == "regression":
        if value is None:  # seq2seq: rank over numeric label strings
            value = float(task.scorer.label_texts[max(range(len(scores)), key=scores.__getitem__)])
        return {"task": task.name, "prediction": value, "scores": scores}
    best = max(range(len(scores)), key=scores.__getitem__)  # first maximum, as torch.argmax
    return {"task": task.name, "prediction": best, "label": spec.label_words[best], "scores": scores}


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


class EncoderKernel(Kernel):
    def __init__(self, model, **options):
        super().__init__(model, **options)
        self._embeddings: dict[tuple[str, ...], torch.Tensor] = {}  # label texts -> (C, e)

    def prepare_task(self, task) -> str:
        if task.pair_head is not None:
            return "siamese"  # scored from the cosine of its two sides: no label texts
        texts = tuple(task.scorer.texts)
        if texts not in self._embeddings:  # tasks sharing a label set share one embedding pass
            with torch.inference_mode():
                self._embeddings[texts] = _encode_texts(self.model, texts)
        return "embed"

    def embed(self, server, features, tasks) -> torch.Tensor:
        """(R, e) sentence embeddings of R rows in ONE backbone pass, each pooled by its task's
        recipe (a siamese export's own, else the backbone's, as `PromptedModel.pooled`)."""
        batch, prompt, mask = server.inputs(features, tasks)
        hidden = self.model.backbone(**self.model.build_inputs(batch, prompt, mask)).last_hidden_state
        hidden = hidden[:, hidden.shape[1] - batch["input_ids"].shape[1]:]  # the input positions only
        recipes = [t.pooling or self.model.pooling for t in tasks]
        out = torch.empty(len(tasks), hidden.shape[-1], device=hidden.device)
        for recipe in dict.fromkeys(recipes):
            rows = torch.tensor([i for i, r in enumerate(recipes) if r == recipe], device=hidden.device)
            out[rows] = pool(hidden[rows], batch["attention_mask"][rows], recipe)
        return out

    def score(self, server, features, tasks):
        flat, flat_tasks, where = expand_sides(features, tasks)
        emb = self.embed(server, flat, flat_tasks)
        plain = [i for i, t in enumerate(tasks) if t.mode != "siamese"]
        out: list[dict | None] = [None] * len(features)
        if plain:
            sub = [tasks[i] for i in plain]
            # A cosine even if the recipe does not normalise, as the label scorer (`_EncoderScorer.logits`).
            pooled = torch.nn.functional.normalize(emb[[where[i][0] for i in plain]], dim=-1)
            tables, offset, count = ragged(sub, lambda t: self._embeddings[tuple(t.scorer.texts)])
            scores = own_columns(label_logits(pooled, torch.cat(tables)), offset, count)  # (B, C_max)
            for j, i in enumerate(plain):
                out[i] = self._label_result(tasks[i], scores[j, : len(tasks[i].scorer.texts)], features[i]["index"])
        for i, t in enumerate(tasks):
            if t.mode == "siamese":
                a, b = where[i]
                cos = torch.nn.functional.cosine_similarity(emb[a:a + 1], emb[b:b + 1], dim=-1)  # (1,)
                out[i] = self._pair_result(t, cos, features[i]["index"])
        return out

    @staticmethod
    def _label_result(task, own: torch.Tensor, row: int) -> dict:
        value = None
        if task.spec.kind == "regression":  # as EncoderRegressionScorer.predict
            lo, hi = task.spec.value_range
            value = float(anchor_value(own[1] - own[0], lo, hi))
        return format_result(task, own.tolist(), row, value)

    @staticmethod
    def _pair_result(task, cos: torch.Tensor, row: int) -> dict:
        """A siamese row, as `SiameseScorer.predict`: "scores" are the head's logits (one per
        label), for regression the cosine of the two sides (the prediction maps it to the range)."""
        head = task.pair_head
        if head.kind == "regression":
            return format_result(task, cos.tolist(), row, float(head.predict(cos)[0]))
        return format_result(task, head.logits(cos)[0].tolist(), row)


class Seq2SeqKernel(Kernel):
    def prepare_task(self, task) -> str:
        if task.scorer.eval_mode == "rank":
            task.scorer.label_ids()  # tokenised once, now
        return task.scorer.eval_mode

    def score(self, server, features, tasks):
        results: list[dict | None] = [None] * len(features)
        rank = [i for i, t in enumerate(tasks) if t.mode == "rank"]
        if rank:
            sub, sub_tasks = [features[i] for i in rank], [tasks[i] for i in rank]
            scores = self._rank_scores(server, sub, sub_tasks)
            for j, i in enumerate(rank):
                results[i] = format_result(tasks[i], scores[j, : len(tasks[i].scorer.label_texts)].tolist(), features[i]["index"])
        by_len: dict[int, list[int]] = {}
        for i, t in enumerate(tasks):
            if t.mode == "generate":
                by_len.setdefault(t.scorer.max_new_tokens(), []).append(i)
        for max_new, sel in by_len.items():
            texts = self._generate(server, [features[i] for i in sel], [tasks[i] for i in sel], max_new)
            for i, text in zip(sel, texts):
                r = {"task": tasks[i].name, "prediction": text}  # as Seq2SeqScorer.predict: the text
                if tasks[i].spec.kind == "classification":  # generated text may be no label at all
                    r["label"] = text if text in tasks[i].spec.label_words else None
                results[i] = r
        return results

    def _generate(self, server, features, tasks, max_new) -> list[str]:
        batch, prompt, mask = server.inputs(features, tasks)
        return self.model.generate(batch, max_new, prompt, mask)

    def _rank_scores(self, server, features, tasks) -> torch.Tensor:
        """Summed log p(label | input) for each row against its own task's labels (B, C_max)."""
        batch, prompt, mask = server.inputs(features, tasks)
        kwargs = self.model.build_inputs(batch, prompt, mask)
        enc = self.model.backbone.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
        rep, within, labels, scores = label_pairs(tasks, enc.last_hidden_state.device)
        scores[rep, within] = self.model.sequence_loglik(enc.last_hidden_state[rep], kwargs["attention_mask"][rep], labels)
        return scores


def prompts_first(prompt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded per-row prompts (masked slots first) -> real rows first, masked slots after.
    A causal model must not see a masked slot at position 0: its query would attend to nothing
    (a NaN that the next layer's values spread). Positions come from the mask, so the order of
    masked slots does not change what a row computes."""
    n = mask.shape[1]
    pads = (mask == 0).sum(1, keepdim=True)  # (B, 1)
    idx = (torch.arange(n, device=mask.device).unsqueeze(0) + pads) % n  # (B, n)
    return prompt.gather(1, idx.unsqueeze(-1).expand_as(prompt)), mask.gather(1, idx)


class CausalKernel(Seq2SeqKernel):
    """Decoder-only: one prefix pass over [BOS][P'_row][input] for every row, then the labels of
    each row's own task as continuations (ept.kinds.causal); generation greedy on the same cache.

    With `prefix_cache` (the default) the keys/values of [BOS][P'] are computed once per task, when
    it is added (`ServedTask.prefix_kv`), and a pass gathers them per row and runs only the inputs;
    without it, every pass recomputes the prompt positions. The two give the same scores. A pass
    with a task that has no cache (added with the cache off) runs uncached as a whole."""

    def prepare_task(self, task) -> str:
        from ept.kinds.causal import prompt_kv

        mode = super().prepare_task(task)
        if self.prefix_cache:
            with torch.inference_mode():
                task.prefix_kv = prompt_kv(self.model, task.prompt)
        return mode

    def _prefix(self, server, features, tasks) -> dict:
        from ept.kinds.causal import cached_prefix_pass, gather_prompt_kv, prefix_pass

        if not self.prefix_cache or any(t.prefix_kv is None for t in tasks):
            batch, prompt, mask = server.inputs(features, tasks)
            return prefix_pass(self.model, batch, *prompts_first(prompt, mask))
        order: dict[str, int] = {}  # the pass's distinct tasks, each row's index among them
        kvs = []
        for t in tasks:
            if t.name not in order:
                order[t.name] = len(kvs)
                kvs.append(t.prefix_kv)
        kv, kv_mask = gather_prompt_kv(kvs, torch.tensor([order[t.name] for t in tasks], device=kvs[0].device))
        return cached_prefix_pass(self.model, server.collate(features), kv, kv_mask)

    def _rank_scores(self, server, features, tasks) -> torch.Tensor:
        from ept.kinds.causal import continuation_loglik

        prefix = self._prefix(server, features, tasks)
        rep, within, labels, scores = label_pairs(tasks, prefix["logp"].device)
        scores[rep, within] = continuation_loglik(self.model, prefix, rep, labels)
        return scores

    def _generate(self, server, features, tasks, max_new) -> list[str]:
        from ept.kinds.causal import greedy_decode

        return greedy_decode(self.model, self._prefix(server, features, tasks), max_new)


KERNELS: Registry[type[Kernel]] = Registry("serving kernel")
KERNELS.register("encoder", EncoderKernel)
KERNELS.register("seq2seq", Seq2SeqKernel)
KERNELS.register("causal", CausalKernel)
