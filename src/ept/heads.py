"""Turn a prompted backbone's output into a task's loss and predictions.

One scorer per (backbone kind, task kind), chosen through a registry. A scorer holds what is the
task's (its label texts, eval mode, pair head); the maths are its backbone kind's (`ept.kinds`,
`model.kind_ops`), the same calls serving makes for rows of many tasks:

- seq2seq and causal: loss = teacher-forced log-likelihood of the target text (the paper's text-to-text
  objective). Predictions by rank classification (log-likelihood of every label string; never an
  invalid label) or by greedy generation (the paper's protocol; always used for free-text tasks).
- encoder, classification: cosine between the mean-pooled, normalised prompted input and the
  embedding of each label word's text (a verbalizer in embedding space), over a temperature.
  No trainable weights unless a linear head is asked for.
- encoder, regression: the same pooled embedding interpolates between two anchor texts
  (score = lo + sigmoid((cos_hi - cos_lo) / T) * (hi - lo)), trained against the normalised score.
  Scoring 26 numeric strings is weak on MiniLM, which embeds "3.4" and "3.6" almost alike.
- encoder, sentence pairs (`pair_encoding="siamese"`, the default for pair tasks on an encoder):
  each side is prompted and pooled on its own (one batched pass), and the task is scored from the
  cosine of the two embeddings, as sentence-transformers models are trained. See `PairHead`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ept.kinds import Labels
from ept.kinds.encoder import TEMPERATURE, anchor_value, text_embeddings
from ept.registry import Registry


class Scorer:
    """A task's scorer on a prompted model: what is the task's; the maths are `model.kind_ops`."""

    def __init__(self, model, spec, eval_mode: str | None = None):
        self.model, self.spec = model, spec
        self.eval_modes = model.kind_ops.eval_modes  # rank (every kind), generate (kinds that generate)
        self.eval_mode = eval_mode or self.eval_modes[0]
        if self.eval_mode not in self.eval_modes:
            raise ValueError(f"eval_mode={self.eval_mode!r} is not available for {model.kind}/{spec.kind}; allowed: {', '.join(self.eval_modes)}")

    pair_encoding = "cross"

    def encode(self, examples, max_length: int):
        """The features this scorer reads (siamese scorers encode the two sides apart)."""
        return self.model.kind_ops.encode(self.model.tokenizer, examples, max_length, self.spec)

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, batch: dict, prompt=None, prompt_mask=None) -> list:
        raise NotImplementedError


class _EncoderScorer(Scorer):
    """Shared: label/anchor text embeddings, cached while the backbone is frozen."""

    def __init__(self, model, spec, eval_mode=None, texts=()):
        super().__init__(model, spec, eval_mode)
        self.texts = tuple(texts)
        self._cache: torch.Tensor | None = None

    def text_embeddings(self) -> torch.Tensor:
        if not self.model.prompt_config.has_prompt:  # ft/lora/ia3: embeddings move with the backbone
            return text_embeddings(self.model, self.texts)
        if self._cache is None:
            with torch.no_grad():
                self._cache = text_embeddings(self.model, self.texts)
        return self._cache

    def logits(self, batch, prompt=None, prompt_mask=None) -> torch.Tensor:
        kind = self.model.kind_ops
        pooled = kind.pooled(batch, prompt, prompt_mask)  # (B, e)
        if self.model.head is not None:
            return self.model.head(pooled)
        return kind.rank_scores(batch, Labels.one(self.text_embeddings(), len(pooled)), pooled=pooled)  # (B, C)


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


# ------------------------------------------------------------------------------ siamese pairs
PAIR_ENCODINGS = ("cross", "siamese")
PAIR_HEADS = ("trainable", "fixed")
PAIR_HEAD_LR = 0.01  # the head's scalars live on the cosine scale: the prompt's lr (0.3) would throw them around
COSENT_SCALE = 20.0  # sentence-transformers' CoSENTLoss default


class PairHead(nn.Module):
    """The few numbers that turn the cosine c of a siamese pair into a task output.

    - regression (STS-B): no tensors. Prediction = lo + (hi - lo) * clamp(c, 0, 1), a fixed map
      (sentence-transformers' STS convention: cosine ~ score / 5). Trained by CoSENT on c, see
      `cosent_loss`.
    - binary (MRPC, RTE, QQP, ...): p(label `positive`) = sigmoid((c - threshold) / T): two
      scalars, threshold and log T. `positive` (a buffer, not trained) is the label whose pairs
      have the higher mean cosine in the fitting data (RTE: entailment, MRPC: equivalent).
    - anchors (3+ labels: CB, MNLI): one anchor cosine a_k per label and a shared T,
      logit_k = -(c - a_k)^2 / T: C + 1 scalars (4 for CB/MNLI). Fitted, this is linear
      discriminant analysis on the one feature c with equal priors (a_k = class mean, T = 2 x
      pooled within-class variance); a cosine cannot separate 3 classes better than an ordering
      of anchors on one axis, and this says so with 4 numbers instead of hiding a layer.

    `fit` sets the values from (cosine, label) pairs of training data. With trainable=False they
    are buffers (zero trainable head: the ablation); else parameters, trained from the fit.
    """

    def __init__(self, kind: str, num_labels: int = 0, trainable: bool = True, value_range=(0.0, 1.0)):
        super().__init__()
        if kind not in ("regression", "binary", "anchors"):
            raise ValueError(f"pair head kind {kind!r}; allowed: regression, binary, anchors")
        self.kind, self.num_labels, self.trainable = kind, num_labels, trainable
        self.lo, self.hi = value_range
        log_t = [math.log(TEMPERATURE)]  # until `fit`: sentence-transformers' scale of 20
        init = {"regression": {}, "binary": {"threshold": torch.tensor([0.5]), "log_temperature": torch.tensor(log_t)},
                "anchors": {"anchors": torch.linspace(0.2, 0.8, max(num_labels, 1)),
                            "log_temperature": torch.tensor(log_t)}}[kind]
        for name, value in init.items():
            if trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.register_buffer("positive", torch.tensor(1))

    @classmethod
    def for_task(cls, spec, trainable: bool = True) -> "PairHead":
        if spec.kind == "regression":
            return cls("regression", 0, trainable, spec.value_range)
        if spec.kind != "classification":
            raise ValueError(f"task {spec.name!r} ({spec.kind}) has no siamese scoring; use pair_encoding=cross")
        n = len(spec.label_words)
        return cls("binary" if n == 2 else "anchors", n, trainable)

    def to_meta(self) -> dict:
        return {"kind": self.kind, "num_labels": self.num_labels, "trainable": self.trainable,
                "value_range": [self.lo, self.hi]}

    @classmethod
    def from_meta(cls, meta: dict) -> "PairHead":
        return cls(meta["kind"], meta["num_labels"], meta["trainable"], tuple(meta["value_range"]))

    def logits(self, cos: torch.Tensor) -> torch.Tensor:
        """(B,) cosines -> (B, C) logits."""
        if self.kind == "anchors":
            return -(cos.unsqueeze(-1) - self.anchors) ** 2 / self.log_temperature.exp()
        z = (cos - self.threshold) / self.log_temperature.exp()
        zero = torch.zeros_like(z)
        return torch.stack([zero, z] if int(self.positive) == 1 else [z, zero], dim=-1)

    def predict(self, cos: torch.Tensor) -> list:
        if self.kind == "regression":
            return (self.lo + (self.hi - self.lo) * cos.clamp(0, 1)).tolist()
        return self.logits(cos).argmax(-1).tolist()

    @torch.no_grad()
    def fit(self, cos: torch.Tensor, labels: torch.Tensor) -> None:
        if self.kind == "regression":
            return
        cos, labels = cos.float().cpu(), labels.long().cpu()
        present = labels.unique().tolist()
        if self.kind == "binary":
            if len(present) < 2:
                raise ValueError(f"fitting a pair threshold needs both labels in the data, got only {present}")
            self.positive.fill_(int(cos[labels == 1].mean() >= cos[labels == 0].mean()))
            self.threshold.fill_(best_threshold(cos, labels == int(self.positive))[0])
            return
        means = torch.stack([cos[labels == k].mean() if (labels == k).any() else cos.mean()
                             for k in range(self.num_labels)])
        var = ((cos - means[labels]) ** 2).mean().clamp(min=1e-4)
        self.anchors.copy_(means)
        self.log_temperature.fill_(math.log(2 * float(var)))


def best_threshold(cos: torch.Tensor, positive: torch.Tensor) -> tuple[float, float]:
    """(threshold, accuracy) of the best rule `cos >= threshold -> positive` on these rows; the
    threshold is the midpoint between neighbouring cosines."""
    order = cos.argsort()
    c, y = cos[order], positive[order].long()
    n = len(c)
    # Cut k: rows < k predicted negative. Correct = negatives before k + positives from k on.
    neg_before = torch.cat([torch.zeros(1, dtype=torch.long), (1 - y).cumsum(0)])
    pos_from = y.sum() - torch.cat([torch.zeros(1, dtype=torch.long), y.cumsum(0)])
    k = int((neg_before + pos_from).argmax())
    edges = torch.cat([c[:1] - 1e-3, c, c[-1:] + 1e-3])
    return float((edges[k] + edges[k + 1]) / 2), float((neg_before + pos_from)[k]) / n


def cosent_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float = COSENT_SCALE) -> torch.Tensor:
    """CoSENT (Su 2022; sentence-transformers `CoSENTLoss`): log(1 + sum over pairs (i, j) with
    label_i > label_j of exp(scale * (cos_j - cos_i))). Chosen over cosine-MSE because it only asks
    that more similar pairs get higher cosines: it scores what Pearson/Spearman measure and does
    not drag the frozen model's cosine scale onto score/5, which the fixed map then reads."""
    s = cos * scale
    diff = s.unsqueeze(1) - s.unsqueeze(0)  # (i, j): s_i - s_j, a loss where label_i < label_j
    wrong = labels.unsqueeze(1) < labels.unsqueeze(0)
    diff = diff.masked_fill(~wrong, -1e12)
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), 0)


class SiameseScorer(Scorer):
    """Cosine of the two separately prompted and pooled sides, scored by `model.pair_head`."""

    pair_encoding = "siamese"

    def __init__(self, model, spec, eval_mode=None, label_texts=None, pair_head: str = "trainable"):
        super().__init__(model, spec, eval_mode)
        if pair_head not in PAIR_HEADS:
            raise ValueError(f"pair_head={pair_head!r}; allowed: {', '.join(PAIR_HEADS)}")
        if model.head is not None:
            raise ValueError("linear_head scores a joint encoding; use pair_encoding=cross with it")
        head = model.pair_head
        if head is None or head.to_meta() != PairHead.for_task(spec, pair_head == "trainable").to_meta():
            device = next(model.backbone.parameters()).device
            model.pair_head = PairHead.for_task(spec, pair_head == "trainable").to(device)

    def encode(self, examples, max_length: int):
        from ept.kinds.encoder import encode_pairs

        return encode_pairs(self.model.tokenizer, examples, self.spec, max_length)

    def cosine(self, batch, prompt=None, prompt_mask=None) -> torch.Tensor:
        if "pair_rows" not in batch:
            raise ValueError("a siamese scorer needs pair batches (ept.kinds.encode with pair_encoding='siamese')")
        emb = self.model.kind_ops.pooled(batch, prompt, prompt_mask)  # (2B, e): sides A then sides B, one pass
        b = batch["pair_rows"]
        return nn.functional.cosine_similarity(emb[:b], emb[b:], dim=-1)

    def loss(self, batch):
        cos = self.cosine(batch)
        if self.spec.kind == "regression":
            return cosent_loss(cos, batch["labels"].float())
        return nn.functional.cross_entropy(self.model.pair_head.logits(cos), batch["labels"])

    @torch.no_grad()
    def predict(self, batch, prompt=None, prompt_mask=None):
        return self.model.pair_head.predict(self.cosine(batch, prompt, prompt_mask))

    @torch.no_grad()
    def cosines(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosines, labels) over batches, eval mode (no dropout)."""
        was = self.model.training
        self.model.eval()
        out = [(self.cosine(b).cpu(), b["labels"].cpu()) for b in batches]
        self.model.train(was)
        return torch.cat([c for c, _ in out]), torch.cat([y for _, y in out])

    def fit(self, batches) -> None:
        """Set the head from training pairs (threshold / anchors); regression needs nothing."""
        if self.spec.kind != "regression":
            self.model.pair_head.fit(*self.cosines(batches))


def pair_head_params(spec, backbone_kind: str, pair_encoding: str = "siamese", pair_head: str = "trainable") -> int:
    """Trainable scalars of the siamese head for this task: binary 2, C labels C + 1, else 0."""
    if resolve_pair_encoding(backbone_kind, spec, pair_encoding) != "siamese" or pair_head == "fixed":
        return 0
    if spec.kind != "classification":
        return 0
    n = len(spec.label_words)
    return 2 if n == 2 else n + 1


def resolve_pair_encoding(backbone_kind: str, spec, requested: str | None) -> str:
    """siamese only where it means something (a pair task on an encoder); else cross."""
    from ept.tasks.spec import siamese_applies

    requested = requested or "cross"
    if requested not in PAIR_ENCODINGS:
        raise ValueError(f"pair_encoding={requested!r}; allowed: {', '.join(PAIR_ENCODINGS)}")
    return "siamese" if siamese_applies(backbone_kind, spec, requested) else "cross"


class TextScorer(Scorer):
    """Seq2seq and decoder-only backbones: the text-to-text protocol through the backbone's kind
    (`ept.kinds.seq2seq`, `ept.kinds.causal`): the target text's loss, rank classification over
    the label strings (one label table for every row), or greedy generation.
    `label_score_eos` (decoder-only): rank a label by log p(word) + log p(EOS | word) (the default:
    the target the model trains on) or by log p(word) alone, as lm-evaluation-harness scores choices."""

    label_score_eos = True

    def __init__(self, model, spec, eval_mode=None, label_texts=None):
        if spec.kind == "generation":
            eval_mode = eval_mode or "generate"
        super().__init__(model, spec, eval_mode)
        if self.eval_mode == "rank" and spec.kind == "generation":
            raise ValueError(f"task {spec.name!r} is free-text: rank classification needs label words; use eval_mode=generate")
        self.label_texts = tuple(label_texts or spec.label_words)
        self._label_ids = None

    def label_ids(self) -> torch.Tensor:
        """(C, T) token ids of the label strings, padded with -100 (tokenised once)."""
        if self._label_ids is None:
            self._label_ids = self.model.kind_ops.label_table(self.label_texts, eos=self.label_score_eos)
        return self._label_ids

    def loss(self, batch):
        return self.model.kind_ops.loss(batch)

    def max_new_tokens(self) -> int:
        return 32 if self.spec.kind == "generation" else max(len(self.label_ids()[0]), 8)

    def label_scores(self, batch, prompt=None, prompt_mask=None) -> torch.Tensor:
        """(B, C) summed log-likelihood of every label string."""
        labels = Labels.one(self.label_ids(), batch["input_ids"].shape[0])
        return self.model.kind_ops.rank_scores(batch, labels, prompt, prompt_mask)

    @torch.no_grad()
    def predict(self, batch, prompt=None, prompt_mask=None):
        if self.eval_mode == "generate":
            return self.model.kind_ops.generate(batch, self.max_new_tokens(), prompt, prompt_mask)
        best = self.label_scores(batch, prompt, prompt_mask).argmax(-1).tolist()
        if self.spec.kind == "regression":
            return [float(self.label_texts[i]) for i in best]
        return best


SCORERS: Registry[type[Scorer]] = Registry("scorer")
SCORERS.register("encoder/classification", EncoderLabelScorer)
SCORERS.register("encoder/regression", EncoderRegressionScorer)
for _backbone in ("seq2seq", "causal"):
    for _kind in ("classification", "regression", "generation"):
        SCORERS.register(f"{_backbone}/{_kind}", TextScorer)


def make_scorer(model, spec, eval_mode: str | None = None, label_texts=None, pair_encoding: str | None = None,
                pair_head: str = "trainable", label_score_eos: bool = True) -> Scorer:
    """The task's scorer. `pair_encoding="siamese"` picks the siamese pair scorer for pair tasks on
    an encoder (attaching `model.pair_head`); None / "cross" keeps the joint [SEP] encoding.
    `label_score_eos=False` (decoder-only rank scoring only) leaves EOS out of the label scores."""
    if not label_score_eos and not model.kind_ops.label_eos:
        raise ValueError(f"label_score_eos=false is for decoder-only (causal) backbones; this one is {model.kind}")
    scorer = _make_scorer(model, spec, eval_mode, label_texts, pair_encoding, pair_head)
    scorer.label_score_eos = label_score_eos
    return scorer


def _make_scorer(model, spec, eval_mode, label_texts, pair_encoding, pair_head) -> Scorer:
    if resolve_pair_encoding(model.kind, spec, pair_encoding) == "siamese":
        return SiameseScorer(model, spec, eval_mode, label_texts, pair_head)
    key = f"{model.kind}/{spec.kind}"
    if key not in SCORERS:
        raise ValueError(f"task {spec.name!r} ({spec.kind}) cannot run on a {model.kind} backbone; "
                         f"supported: {', '.join(SCORERS.names())}")
    return SCORERS.get(key)(model, spec, eval_mode, label_texts)
