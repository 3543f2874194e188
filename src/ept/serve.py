"""Mixed-task serving: one frozen backbone, many task prompts, rows of different tasks in ONE batch.

    from ept.serve import MultiTaskServer
    server = MultiTaskServer(*load_backbone("minilm"))
    server.add_task("sst2", "runs/sst2-ept/export", get_task("sst2"))
    server.add_task("rte", "runs/rte-pt/export", label_words=("entailment", "not_entailment"))
    server.score([{"task": "sst2", "text": "a gem"}, {"task": "rte", "fields": ["A man sleeps.", "He is awake."]}])

An EPT task is one vector (paper Section 3.3), so what tells tasks apart is the few input
positions in front of each row. PEFT can only switch the active prompt adapter between batches
(reference-spec §1.7); here every row carries its own prompt:

- The prompts of all served tasks sit in one bank (T, n_max, e), each LEFT-padded to the longest
  one with a mask (T, n_max). A batch gathers its rows' prompts with one index and keeps the last
  n_b columns, n_b being the longest prompt among its rows (EPT n=1 beside PT/EPT* n=10).
  Left padding keeps T5's relative distances; `PromptedModel.build_inputs` gives BERT-family
  encoders the positions each row has alone. The backbone runs once for the whole batch.
- Encoder label scoring: each task's label (or anchor) text embeddings are computed once, when
  the task is added, and stacked (sum C_t, e); one matmul scores every row against every label and
  each row keeps its own task's columns.
- Seq2seq rank classification: one encoder pass; then each row's encoder output is repeated once
  per label of ITS task (sum over rows of C_t decoder rows, no padding label sets) and one
  decoder pass scores them all. Generation-mode tasks are decoded in one `generate` call per
  distinct `max_new_tokens`.

Scores and predictions equal those of each task's own scorer (`ept.heads.make_scorer`) on a
single-task batch, up to float summation order (tests/test_serve.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ept.backbones import PromptedModel
from ept.batching import collate, to_device
from ept.checkpoint import load_exported
from ept.heads import TEMPERATURE, make_scorer
from ept.prompts import PTConfig

MAX_LENGTH = 256  # paper Appendix B.2; a task spec's own max_length wins


@dataclass(frozen=True)
class LabelSpec:
    """A task known only by its label words (or regression anchors): what `make_scorer` reads."""

    name: str
    kind: str = "classification"  # classification | regression | generation
    label_words: tuple[str, ...] = ()
    anchor_words: tuple[str, ...] = ()  # encoder regression: texts for (min, max)
    value_range: tuple[float, ...] = ()  # regression: (lo, hi)
    max_length: int = MAX_LENGTH

    def __post_init__(self):
        if self.kind not in ("classification", "regression", "generation"):
            raise ValueError(f"task {self.name!r}: kind={self.kind!r}; allowed: classification, regression, generation")
        if self.kind == "classification" and len(self.label_words) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs at least 2 label words, got {self.label_words!r}")


@dataclass
class ServedTask:
    name: str
    spec: Any
    scorer: Any  # the task's own scorer: its cached label embeddings / label ids are reused here
    prompt: torch.Tensor  # P' (n, e), fp32
    index: int  # row in the prompt bank
    mode: str  # "embed" (encoder) | "rank" | "generate" (seq2seq)
    max_length: int
    meta: dict


class MultiTaskServer:
    """Holds one frozen backbone and any number of task prompts; scores mixed-task batches.

    The backbone is put in eval mode and frozen. Tasks: `add_task`. Rows: dicts with "task" and
    either "text" (encoder: one segment; seq2seq: the text-to-text source) or "fields" (a list of
    raw segments: encoders read them as a [SEP] pair, seq2seq renders them with the task spec's
    template when it has one).
    """

    def __init__(self, backbone, tokenizer, max_length: int | None = None):
        backbone.eval()
        # The wrapper's own prompt is never used: every call passes per-row prompts.
        self.model = PromptedModel(backbone, tokenizer, PTConfig(num_tokens=1))
        self.model.eval()
        self.tokenizer, self.kind, self.max_length = tokenizer, self.model.kind, max_length
        self.device = next(backbone.parameters()).device
        self.tasks: dict[str, ServedTask] = {}
        self._banks: dict | None = None

    # ------------------------------------------------------------------ tasks
    def add_task(self, name: str, prompt: torch.Tensor | str | Path, spec=None, *, label_words=None,
                 kind: str = "classification", eval_mode: str | None = None) -> ServedTask:
        """Serve `name` with `prompt`: a P' tensor (n, e) or an `ept export` folder.

        `spec` is a TaskSpec (or anything with name/kind/label_words); without one, `label_words`
        (and `kind`) describe the task. `eval_mode` (seq2seq): rank | generate.
        """
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already served; served: {', '.join(self.tasks)}")
        meta: dict = {}
        if not torch.is_tensor(prompt):
            prompt, meta = load_exported(prompt)
        prompt = prompt.detach().float()
        if prompt.dim() != 2 or prompt.shape[1] != self.model.embed_dim:
            raise ValueError(f"task {name!r}: prompt has shape {tuple(prompt.shape)}; this backbone needs (n, {self.model.embed_dim})")
        if spec is None:
            if not label_words and kind != "generation":
                raise ValueError(f"task {name!r}: give a task spec or its label_words")
            spec = LabelSpec(name, kind, tuple(label_words or ()))
        scorer = make_scorer(self.model, spec, eval_mode)
        if self.kind == "encoder":
            mode = "embed"
            scorer.text_embeddings()  # computed once, now, with no prompt (frozen backbone)
        else:
            mode = scorer.eval_mode
            if mode == "rank":
                scorer.label_ids()
        max_length = self.max_length or getattr(spec, "max_length", None) or MAX_LENGTH
        task = ServedTask(name, spec, scorer, prompt.to(self.device), len(self.tasks), mode, max_length, meta)
        self.tasks[name] = task
        self._banks = None
        return task

    def _build_banks(self) -> dict:
        """Stack every task's prompt (left-padded) and labels once; batches only index them."""
        tasks = list(self.tasks.values())
        T, e = len(tasks), self.model.embed_dim
        n = torch.tensor([t.prompt.shape[0] for t in tasks])
        n_max = int(n.max())
        prompts = torch.zeros(T, n_max, e, device=self.device)
        mask = torch.zeros(T, n_max, dtype=torch.long, device=self.device)
        for i, t in enumerate(tasks):
            prompts[i, n_max - n[i]:] = t.prompt  # left padding: real rows last, next to the input
            mask[i, n_max - n[i]:] = 1
        banks = {"prompt": prompts, "mask": mask, "n": n.to(self.device)}
        # label sets: one flat table, task t owns rows offset[t] .. offset[t]+count[t]-1
        if self.kind == "encoder":
            tables = [t.scorer.text_embeddings() for t in tasks]
        else:
            tables = [t.scorer.label_ids() if t.mode == "rank" else torch.empty(0, 1, dtype=torch.long) for t in tasks]
        count = torch.tensor([len(x) for x in tables])
        banks["offset"] = (count.cumsum(0) - count).to(self.device)
        banks["count"] = count.to(self.device)
        if self.kind == "encoder":
            banks["labels"] = torch.cat(tables).to(self.device)  # (sum C, e)
        else:
            width = max(x.shape[1] for x in tables)
            padded = [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-100) for x in tables]
            banks["labels"] = torch.cat(padded).to(self.device)  # (sum C, T) padded with -100
        return banks

    @property
    def banks(self) -> dict:
        if self._banks is None:
            self._banks = self._build_banks()
        return self._banks

    # ------------------------------------------------------------------ rows -> features
    def _task(self, row: dict, i: int) -> ServedTask:
        name = row.get("task") if isinstance(row, dict) else None
        if name not in self.tasks:
            raise ValueError(f"row {i}: task {name!r} is not served; served: {', '.join(self.tasks) or '(none)'}")
        return self.tasks[name]

    def _segments(self, row: dict, task: ServedTask, i: int) -> tuple[str, str | None]:
        if "text" in row:
            return str(row["text"]), None
        fields = row.get("fields")
        if not fields or not isinstance(fields, (list, tuple)):
            raise ValueError(f"row {i}: needs \"text\" or a non-empty \"fields\" list, got keys {sorted(row)}")
        fields = [str(f) for f in fields]
        if self.kind == "encoder":  # as ept.batching: first segment, then the rest joined after [SEP]
            return fields[0], (" ".join(fields[1:]) or None)
        spec_fields = getattr(task.spec, "fields", None)
        if spec_fields and hasattr(task.spec, "template"):
            if len(spec_fields) != len(fields):
                raise ValueError(f"row {i}: task {task.name!r} has fields {list(spec_fields)}, got {len(fields)} values")
            return task.spec.template(dict(zip(spec_fields, fields))), None
        return " ".join(fields), None

    def prepare(self, rows: Iterable[dict]) -> list[dict]:
        """Tokenise rows (grouped by max length and single/pair, one tokenizer call per group)."""
        rows = list(rows)
        tasks = [self._task(r, i) for i, r in enumerate(rows)]
        segs = [self._segments(r, t, i) for i, (r, t) in enumerate(zip(rows, tasks))]
        features: list[dict | None] = [None] * len(rows)
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, (t, (_, second)) in enumerate(zip(tasks, segs)):
            groups.setdefault((t.max_length, second is not None), []).append(i)
        for (max_length, pair), idx in groups.items():
            firsts = [segs[i][0] for i in idx]
            seconds = [segs[i][1] for i in idx] if pair else None
            enc = self.tokenizer(firsts, seconds, truncation=True, max_length=max_length)
            for j, i in enumerate(idx):
                f = {k: enc[k][j] for k in enc.keys()}
                f.update(labels=None, index=i, task=tasks[i].index)
                features[i] = f
        return features

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def predict(self, features: list[dict], batch_size: int | None = None) -> list[dict]:
        """Score pre-tokenised rows (from `prepare`); one result dict per row, in input order.

        batch_size None: ONE backbone pass over all rows, whatever their tasks. Otherwise rows
        are sorted by (prompt length, input length) and cut into passes of `batch_size` rows, each
        still mixing tasks: a pass is as wide as its longest prompt plus its longest input, and
        padding, not the number of passes, is what costs on a CPU.
        """
        if batch_size is None or batch_size >= len(features):
            return self._predict_one_pass(features)
        n = self.banks["n"].tolist()
        order = sorted(range(len(features)), key=lambda i: (-n[features[i]["task"]], -len(features[i]["input_ids"])))
        out: list[dict | None] = [None] * len(features)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, r in zip(chunk, self._predict_one_pass([features[i] for i in chunk])):
                out[i] = r
        return out

    def score(self, rows: Iterable[dict], batch_size: int = 64, sort_by_length: bool = True) -> list[dict]:
        """Tokenise and score rows of any mix of tasks, `batch_size` rows per backbone pass
        (rows of similar length together when sort_by_length; results in input order)."""
        features = self.prepare(rows)
        if sort_by_length:
            return self.predict(features, batch_size)
        out: list[dict] = []
        for start in range(0, len(features), batch_size):
            out.extend(self._predict_one_pass(features[start:start + batch_size]))
        return out

    @torch.inference_mode()
    def _predict_one_pass(self, features: list[dict]) -> list[dict]:
        if not features:
            return []
        names = list(self.tasks)
        task_idx = torch.tensor([f["task"] for f in features], device=self.device)
        modes = {self.tasks[names[i]].mode for i in task_idx.tolist()}
        if self.kind == "encoder":
            scores = self._embed_scores(features, task_idx)
            return self._results(features, task_idx, scores)
        results: list[dict | None] = [None] * len(features)
        if "rank" in modes:
            sel = [i for i, f in enumerate(features) if self.tasks[names[f["task"]]].mode == "rank"]
            sub = [features[i] for i in sel]
            part = self._results(sub, task_idx[sel], self._rank_scores(sub, task_idx[sel]))
            for i, r in zip(sel, part):
                results[i] = r
        if "generate" in modes:
            self._generate(features, task_idx, results)
        return results

    def _batch(self, features: list[dict], task_idx: torch.Tensor):
        """Padded inputs plus the rows' prompts (B, n_b, e) and prompt mask (B, n_b)."""
        plain = [{k: v for k, v in f.items() if k != "task"} for f in features]
        batch = to_device(collate(self.tokenizer, plain), self.device)
        banks = self.banks
        n_b = int(banks["n"][task_idx].max())
        prompt = banks["prompt"][task_idx, -n_b:]  # (B, n_b, e), left-padded
        mask = banks["mask"][task_idx, -n_b:]  # (B, n_b)
        return batch, prompt, mask

    def _embed_scores(self, features, task_idx) -> torch.Tensor:
        batch, prompt, mask = self._batch(features, task_idx)
        pooled = self.model.pooled(batch, prompt, mask)  # (B, e), one backbone pass
        every = pooled @ self.banks["labels"].T / TEMPERATURE  # (B, sum C): as EncoderLabelScorer.logits
        return self._own_columns(every, task_idx)

    def _own_columns(self, every: torch.Tensor, task_idx: torch.Tensor) -> torch.Tensor:
        """(B, sum C) -> (B, C_max): each row's own task's labels, -inf where a task has fewer."""
        offset, count = self.banks["offset"][task_idx], self.banks["count"][task_idx]  # (B,)
        cols = torch.arange(int(count.max()), device=every.device)  # (C_max,)
        valid = cols < count.unsqueeze(1)  # (B, C_max)
        index = (offset.unsqueeze(1) + cols).clamp(max=every.shape[1] - 1)
        return every.gather(1, index).masked_fill(~valid, float("-inf"))

    def _rank_scores(self, features, task_idx) -> torch.Tensor:
        """Summed log p(label | input) for each row against its own task's labels (B, C_max)."""
        batch, prompt, mask = self._batch(features, task_idx)
        kwargs = self.model.build_inputs(batch, prompt, mask)
        backbone = self.model.backbone
        enc = backbone.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
        banks = self.banks
        count, offset = banks["count"][task_idx], banks["offset"][task_idx]  # (B,)
        rep = torch.repeat_interleave(torch.arange(len(features), device=self.device), count)  # (R,) R = sum C_row
        within = torch.arange(len(rep), device=self.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        labels = banks["labels"][offset[rep] + within]  # (R, T)
        labels = labels[:, : int((labels != -100).sum(1).max())]  # drop columns no selected label uses
        hidden = enc.last_hidden_state[rep]  # (R, n+L, e)
        flat = self.model.sequence_loglik(hidden, kwargs["attention_mask"][rep], labels)  # (R,)
        scores = torch.full((len(features), int(count.max())), float("-inf"), device=self.device)
        scores[rep, within] = flat
        return scores

    def _generate(self, features, task_idx, results) -> None:
        names = list(self.tasks)
        by_len: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            task = self.tasks[names[f["task"]]]
            if task.mode != "generate":
                continue
            # as Seq2SeqScorer.predict: same max_new_tokens, so the same greedy output
            spec = task.spec
            max_new = 32 if spec.kind == "generation" else max(len(task.scorer.label_ids()[0]), 8)
            by_len.setdefault(max_new, []).append(i)
        for max_new, sel in by_len.items():
            sub = [features[i] for i in sel]
            batch, prompt, mask = self._batch(sub, task_idx[sel])
            texts = self.model.generate(batch, max_new, prompt, mask)
            for i, text in zip(sel, texts):
                task = self.tasks[names[features[i]["task"]]]
                words = tuple(getattr(task.spec, "label_words", ()) or ())
                r = {"task": task.name, "prediction": text}  # as Seq2SeqScorer.predict: the text
                if task.spec.kind == "classification":  # generated text may be no label at all
                    r["label"] = text if text in words else None
                results[i] = r

    def _results(self, features, task_idx, scores: torch.Tensor) -> list[dict]:
        names = list(self.tasks)
        best = scores.argmax(-1).tolist()
        # encoder regression: lo + sigmoid(s_hi - s_lo) (hi - lo), as EncoderRegressionScorer
        diff = (scores[:, 1] - scores[:, 0]).float().sigmoid().tolist() if scores.shape[1] > 1 else None
        rows, counts = scores.tolist(), self.banks["count"].tolist()
        out = []
        for i, (t, b) in enumerate(zip(task_idx.tolist(), best)):
            task = self.tasks[names[t]]
            spec, own = task.spec, rows[i][: counts[t]]
            if spec.kind == "regression" and self.kind == "encoder":
                lo, hi = spec.value_range
                out.append({"task": task.name, "prediction": lo + diff[i] * (hi - lo), "scores": own})
            elif spec.kind == "regression":  # seq2seq: rank over numeric label strings
                out.append({"task": task.name, "prediction": float(task.scorer.label_texts[b]), "scores": own})
            else:
                out.append({"task": task.name, "prediction": b, "label": spec.label_words[b], "scores": own})
        return out
