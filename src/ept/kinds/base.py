"""The interface every backbone kind implements, and the pieces its implementations share.

A kind (encoder, seq2seq, causal; `ept.kinds.KINDS`) owns what depends on how a backbone reads
its input and produces its output: encoding rows, the inputs with per-row prompts, the training
loss, rank scoring, generation and, for serving, what is computed once per task. Training,
evaluation and serving all make the same calls: a training batch is one task (one prompt, one
label table), a serving pass many (a prompt and a label table per row). This is
lm-evaluation-harness's shape (every caller goes through `LM.loglikelihood` / `generate_until`)
and PEFT's mixed-adapter forward (`adapter_names`: one adapter is the special case of many).

    kind.encode(tokenizer, examples, max_length, spec) -> Encoded    rows -> features
    kind.loss(batch)                                   -> scalar     one task, its own prompt
    kind.rank_scores(batch, labels, prompt, mask)      -> (B, C)     each row against ITS label table
    kind.generate(batch, max_new_tokens, prompt, mask) -> [str]
    kind.prepare_task(task) -> mode;  kind.serve(server, features, tasks) -> [result]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class RowError(ValueError):
    """One input row is unusable; `.row` is its index in the request / file (None: not known)."""

    def __init__(self, row: int | None, message: str):
        super().__init__(message if row is None else f"row {row}: {message}")
        self.row = row


@dataclass
class Labels:
    """Per-row label tables: the distinct tables of a batch (token ids (C_t, T) padded with -100,
    or label embeddings (C_t, e)) and each row's table. One task: one table for every row."""

    tables: list[torch.Tensor]
    which: torch.Tensor  # (B,) index into tables

    @classmethod
    def one(cls, table: torch.Tensor, rows: int) -> "Labels":
        return cls([table], torch.zeros(rows, dtype=torch.long))

    @classmethod
    def of_tasks(cls, tasks: list, table_of) -> "Labels":
        """The tables of the distinct tasks of a pass (`table_of(task)`), in order of first row."""
        order: dict[str, int] = {}
        tables = []
        for t in tasks:
            if t.name not in order:
                order[t.name] = len(tables)
                tables.append(table_of(t))
        return cls(tables, torch.tensor([order[t.name] for t in tasks]))

    def spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's (offset, count) into the tables' concatenation."""
        counts = torch.tensor([len(x) for x in self.tables])
        return (counts.cumsum(0) - counts)[self.which], counts[self.which]

    def own_columns(self, every: torch.Tensor) -> torch.Tensor:
        """(B, sum C) scores against every table -> (B, C_max): each row's own labels, -inf where
        its table is shorter than the longest."""
        offset, count = (x.to(every.device) for x in self.spans())
        cols = torch.arange(int(count.max()), device=every.device)
        index = (offset.unsqueeze(1) + cols).clamp(max=every.shape[1] - 1)
        return every.gather(1, index).masked_fill(~(cols < count.unsqueeze(1)), float("-inf"))

    def pairs(self, device):
        """One (row, label) pair per label of each row's own table, for rank classification:
        rep (R,) the row, within (R,) the label's index in its table, ids (R, T) padded with -100
        (columns no pair uses dropped), and a (B, C_max) score table filled with -inf."""
        offset, count = self.spans()
        width = max(x.shape[1] for x in self.tables)
        flat = torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-100) for x in self.tables])
        rep = torch.repeat_interleave(torch.arange(len(self.which)), count)  # (R,), R = sum of C_row
        within = torch.arange(len(rep)) - torch.repeat_interleave(count.cumsum(0) - count, count)
        ids = flat[offset[rep] + within]
        ids = ids[:, : int((ids != -100).sum(1).max())].to(device)
        scores = torch.full((len(self.which), int(count.max())), float("-inf"), device=device)
        return rep.to(device), within.to(device), ids, scores


class Kind:
    """One backbone kind bound to one `PromptedModel`. Subclasses set `name` and `eval_modes`."""

    name = ""
    eval_modes: tuple[str, ...] = ("rank",)
    auto_class = "AutoModel"  # the transformers class that loads such a backbone
    peft_task_type = "FEATURE_EXTRACTION"  # the PEFT adapter's task type in an export
    absolute_positions = False  # positions past max_position_embeddings crash (BERT), not extrapolate
    pre_layernorm = False  # every block normalises its input: bf16 is rounding noise there (ept.precision)
    lead_token = False  # a token (BOS, or `--sink-token`) may open each row before P'; exports keep it first
    label_eos = False  # rank scoring may add the EOS term after a label (`--label-score-eos`)
    segment_pairs = False  # a pair is two segments of one row ([SEP]); siamese scoring, pooled sentence embeddings

    @staticmethod
    def prepare_tokenizer(tokenizer, name: str) -> None:
        """Fix what this kind needs of a freshly loaded tokenizer (the default: nothing)."""

    def __init__(self, model, prefix_cache: bool = True, prefix_cache_bytes: int | None = None, warn=None):
        self.model = model
        self.prefix_cache = prefix_cache  # serving, causal: reuse each task's prompt keys/values
        self.cache = None  # serving, causal: the capped LRU of those (ept.kinds.prefixcache)

    def forget(self, name: str) -> None:
        """A served task was removed: drop what was computed for it."""
        if self.cache is not None:
            self.cache.drop(name)

    # ------------------------------------------------------------------ rows and inputs
    @staticmethod
    def encode(tokenizer, examples, max_length: int, spec=None, count_truncated: bool = True):
        """Features (python lists) of `examples` (`ept.tasks.Example`), tokenised once: training
        rows with their labels, serving rows (no target) alike."""
        raise NotImplementedError

    def build_inputs(self, batch: dict, prompt=None, prompt_mask=None) -> dict:
        """Backbone kwargs: [P'; X] as input embeddings and the extended mask. `prompt` is P' (n, e)
        shared or (B, n, e) per row (None: no prompt, ft/lora/ia3), `prompt_mask` (B, n) hides the
        padding of per-row prompts of different lengths. Kinds add positions or special tokens."""
        embeds = self.model.backbone.get_input_embeddings()(batch["input_ids"])  # (B, L, e)
        mask = batch["attention_mask"]
        if prompt is not None:
            embeds, mask, _ = prepend_prompt(embeds, mask, prompt, prompt_mask)
        return {"inputs_embeds": embeds, "attention_mask": mask}

    def prompt_stack(self, kwargs: dict):
        """Runs the layer stack the prompt goes through (what `ept analyze residual` hooks) on
        `build_inputs`' kwargs: the backbone's base model (seq2seq: its encoder only)."""
        return self.model.backbone.base_model(**kwargs)

    # ------------------------------------------------------------------ training and scoring
    def loss(self, batch: dict) -> torch.Tensor:
        """The training loss of a batch of one task with the model's own prompt (text-to-text
        kinds: the target's cross-entropy; an encoder's depends on the task: `ept.heads`)."""
        raise NotImplementedError

    def rank_scores(self, batch: dict, labels: Labels, prompt=None, prompt_mask=None) -> torch.Tensor:
        """(B, C_max) scores of each row against its own label table, -inf past its labels."""
        raise NotImplementedError

    def generate(self, batch: dict, max_new_tokens: int, prompt=None, prompt_mask=None) -> list[str]:
        raise ValueError(f"a {self.name} backbone does not generate text; eval modes: {', '.join(self.eval_modes)}")

    # ------------------------------------------------------------------ serving
    def prepare_task(self, task) -> str:
        """Once per added task: cache what does not depend on the input; returns its mode."""
        raise NotImplementedError

    def serve(self, server, features: list[dict], tasks: list) -> list[dict]:
        """One pass over rows of any mix of tasks: one result dict per row."""
        raise NotImplementedError


def prepend_prompt(embeds, mask, prompt, prompt_mask=None, token_type_ids=None):
    """[P'; X]: embeds (B, L, e), mask (B, L), prompt (n, e) shared or (B, n, e) per row.

    prompt_mask (B, n) hides padding rows of per-row prompts of different lengths (mixed-task
    serving). Pad such prompts on the LEFT (padding first, then the row's real prompt): T5's
    relative position bias then sees the same distances as for the row alone (BERT-family
    positions are re-based in `EncoderKind.build_inputs`, causal ones come from the mask).
    The prompt (fp32) is cast to the embeddings' dtype, so bf16/fp16 backbones work.
    Returns (embeds (B, n+L, e), mask (B, n+L), token_type_ids or None).
    """
    B = embeds.shape[0]
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)  # (B, n, e), a view
    n = prompt.shape[1]
    if prompt_mask is None:
        prompt_mask = mask.new_ones(B, n)
    embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
    mask = torch.cat([prompt_mask.to(mask.dtype), mask], dim=1)
    if token_type_ids is not None:
        token_type_ids = torch.cat([token_type_ids.new_zeros(B, n), token_type_ids], dim=1)
    return embeds, mask, token_type_ids


def format_result(task, scores: list[float], row: int, value: float | None = None) -> dict:
    """One served row's result from its own task's scores; a NaN/inf score is an error, never output."""
    if not all(math.isfinite(s) for s in scores) or (value is not None and not math.isfinite(value)):
        raise RowError(row, f"task {task.name!r}: the model gave non-finite scores {scores}; check the prompt and backbone")
    spec = task.spec
    if spec.kind == "regression":
        if value is None:  # seq2seq / causal: rank over numeric label strings
            value = float(task.scorer.label_texts[max(range(len(scores)), key=scores.__getitem__)])
        return {"task": task.name, "prediction": value, "scores": scores}
    best = max(range(len(scores)), key=scores.__getitem__)  # first maximum, as torch.argmax
    return {"task": task.name, "prediction": best, "label": spec.label_words[best], "scores": scores}


def generated_result(task, text: str) -> dict:
    """A generate-mode row: the text (as the scorer's predict); "label" only if it is one."""
    result = {"task": task.name, "prediction": text}
    if task.spec.kind == "classification":  # generated text may be no label at all
        result["label"] = text if text in task.spec.label_words else None
    return result


def prompts_first(prompt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded per-row prompts (masked slots first) -> real rows first, masked slots after.
    A causal model must not see a masked slot at position 0: its query would attend to nothing
    (a NaN that the next layer's values spread). Positions come from the mask, so the order of
    masked slots does not change what a row computes."""
    n = mask.shape[1]
    pads = (mask == 0).sum(1, keepdim=True)  # (B, 1)
    idx = (torch.arange(n, device=mask.device).unsqueeze(0) + pads) % n  # (B, n)
    return prompt.gather(1, idx.unsqueeze(-1).expand_as(prompt)), mask.gather(1, idx)
