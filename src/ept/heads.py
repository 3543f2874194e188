"""Turn a prompted backbone's output into a task's loss and predictions.

One scorer per (backbone kind, task kind), chosen through a registry:

- seq2seq: loss = teacher-forced log-likelihood of the target text (the paper's text-to-text
  objective). Predictions by rank classification (log-likelihood of every label string; never an
  invalid label) or by greedy generation (the paper's protocol; always used for free-text tasks).
- encoder, classification: cosine between the mean-pooled, normalised prompted input and the
  embedding of each label word's text (a verbalizer in embedding space), over a temperature.
  No trainable weights unless a linear head is asked for.
- encoder, regression: the same pooled embedding interpolates between two anchor texts
  (score = lo + sigmoid((cos_hi - cos_lo) / T) * (hi - lo)), trained against the normalised score.
  Scoring 26 numeric strings is weak on MiniLM, which embeds "3.4" and "3.6" almost alike.
"""

from __future__ import annotations

import torch
from torch import nn

from ept.registry import Registry

TEMPERATURE = 0.05  # sentence-transformers' usual scale of 20 for cosine logits


class Scorer:
    eval_modes: tuple[str, ...] = ("rank",)

    def __init__(self, model, spec, eval_mode: str | None = None):
        self.model, self.spec = model, spec
        self.eval_mode = eval_mode or self.eval_modes[0]
        if self.eval_mode not in self.eval_modes:
            raise ValueError(f"eval_mode={self.eval_mode!r} is not available for {model.kind}/{spec.kind}; allowed: {', '.join(self.eval_modes)}")

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, batch: dict, prompt=None, prompt_mask=None) -> list:
        raise NotImplementedError


def _encode_texts(model, texts) -> torch.Tensor:
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


class _EncoderScorer(Scorer):
    """Shared: label/anchor text embeddings, cached while the backbone is frozen."""

    def __init__(self, model, spec, eval_mode=None, texts=()):
        super().__init__(model, spec, eval_mode)
        self.texts = tuple(texts)
        self._cache: torch.Tensor | None = None

    def text_embeddings(self) -> torch.Tensor:
        if not self.model.prompt_config.has_prompt:  # ft/lora/ia3: embeddings move with the backbone
            return _encode_texts(self.model, self.texts)
        if self._cache is None:
            with torch.no_grad():
                self._cache = _encode_texts(self.model, self.texts)
        return self._cache

    def logits(self, batch, prompt=None, prompt_mask=None) -> torch.Tensor:
        pooled = self.model.pooled(batch, prompt, prompt_mask)  # (B, e)
        if self.model.head is not None:
            return self.model.head(pooled)
        return label_logits(pooled, self.text_embeddings())  # (B, C)


class EncoderLabelScorer(_EncoderScorer):
    def __init__(self, model, spec, eval_mode=None, label_texts=None):
        super().__init__(model, spec, eval_mode, label_texts or spec.label_words)

    def loss(self, batch):
        return nn.functional.cross_entropy(self.logits(batch), batch["labels"])

    @torch.no_grad()
    def predict(self, batch, prompt=None, prompt_mask=None):
        return self.logits(batch, prompt, prompt_mask).argmax(-1).tolist()


class EncoderRegressionScorer(_EncoderScorer):
    def __init__(self, model, spec, eval_mode=None, label_texts=None):
        super().__init__(model, spec, eval_mode, label_texts or spec.anchor_words)
        if len(self.texts) != 2:
            raise ValueError(f"task {spec.name!r}: regression on an encoder needs two anchor_words, got {self.texts!r}")
        self.lo, self.hi = spec.value_range

    def _logit(self, batch, prompt=None, prompt_mask=None):
        cos = self.logits(batch, prompt, prompt_mask)  # (B, 2)
        return cos[:, 1] - cos[:, 0]

    def loss(self, batch):
        target = (batch["labels"].float() - self.lo) / (self.hi - self.lo)
        return nn.functional.binary_cross_entropy_with_logits(self._logit(batch), target)

    @torch.no_grad()
    def predict(self, batch, prompt=None, prompt_mask=None):
        return anchor_value(self._logit(batch, prompt, prompt_mask), self.lo, self.hi).tolist()


class Seq2SeqScorer(Scorer):
    eval_modes = ("rank", "generate")

    def __init__(self, model, spec, eval_mode=None, label_texts=None):
        if spec.kind == "generation":
            eval_mode = eval_mode or "generate"
        super().__init__(model, spec, eval_mode)
        if self.eval_mode == "rank" and spec.kind == "generation":
            raise ValueError(f"task {spec.name!r} is free-text: rank classification needs label words; use eval_mode=generate")
        self.label_texts = tuple(label_texts or spec.label_words)
        self._label_ids = None

    def label_ids(self) -> torch.Tensor:
        if self._label_ids is None:
            tok = self.model.tokenizer(list(self.label_texts), padding=True, return_tensors="pt")
            self._label_ids = tok["input_ids"].masked_fill(tok["attention_mask"] == 0, -100)  # (C, T)
        return self._label_ids

    def loss(self, batch):
        return self.model.seq2seq_loss(batch)

    def max_new_tokens(self) -> int:
        return 32 if self.spec.kind == "generation" else max(len(self.label_ids()[0]), 8)

    def _generate(self, batch, max_new, prompt=None, prompt_mask=None) -> list[str]:
        return self.model.generate(batch, max_new, prompt, prompt_mask)

    def label_scores(self, batch, prompt=None, prompt_mask=None) -> torch.Tensor:
        """(B, C) summed log-likelihood of every label string."""
        return self.model.label_loglik(batch, self.label_ids(), prompt, prompt_mask)

    @torch.no_grad()
    def predict(self, batch, prompt=None, prompt_mask=None):
        if self.eval_mode == "generate":
            return self._generate(batch, self.max_new_tokens(), prompt, prompt_mask)
        best = self.label_scores(batch, prompt, prompt_mask).argmax(-1).tolist()
        if self.spec.kind == "regression":
            return [float(self.label_texts[i]) for i in best]
        return best


SCORERS: Registry[type[Scorer]] = Registry("scorer")
SCORERS.register("encoder/classification", EncoderLabelScorer)
SCORERS.register("encoder/regression", EncoderRegressionScorer)
for _kind in ("classification", "regression", "generation"):
    SCORERS.register(f"seq2seq/{_kind}", Seq2SeqScorer)


class CausalLMScorer(Seq2SeqScorer):
    """Decoder-only LMs (ept.causal): the same text-to-text protocol as seq2seq, the loss and
    scores computed on `[BOS][P'][source + cue][target]` with the LM head only where scored."""

    def label_ids(self) -> torch.Tensor:
        if self._label_ids is None:
            from ept.causal import label_id_table

            self._label_ids = label_id_table(self.model.tokenizer, self.label_texts)
        return self._label_ids

    def loss(self, batch):
        from ept.causal import target_loss

        return target_loss(self.model, batch)

    def _generate(self, batch, max_new, prompt=None, prompt_mask=None):
        from ept.causal import greedy_generate

        return greedy_generate(self.model, batch, max_new, prompt, prompt_mask)

    def label_scores(self, batch, prompt=None, prompt_mask=None):
        from ept.causal import rank_scores

        return rank_scores(self.model, batch, self.label_ids(), prompt, prompt_mask)


for _kind in ("classification", "regression", "generation"):
    SCORERS.register(f"causal/{_kind}", CausalLMScorer)


def make_scorer(model, spec, eval_mode: str | None = None, label_texts=None) -> Scorer:
    key = f"{model.kind}/{spec.kind}"
    if key not in SCORERS:
        raise ValueError(f"task {spec.name!r} ({spec.kind}) cannot run on a {model.kind} backbone; "
                         f"supported: {', '.join(SCORERS.names())}")
    return SCORERS.get(key)(model, spec, eval_mode, label_texts)
