"""One module per backbone kind, registered once here: `encoder` (BERT family), `seq2seq` (T5),
`causal` (decoder-only LMs). Each implements `ept.kinds.base.Kind`; training, evaluation and
serving all go through it (docs/adding_a_backbone.md: a new kind is its module and one line here).

The kind of a loaded backbone is decided once, by `ept.backbones.backbone_kind(config)`, and
`PromptedModel.kind_ops` is that kind bound to the model.
"""

from __future__ import annotations

from ept.kinds.base import Kind, Labels, RowError  # noqa: F401  (the interface, re-exported)
from ept.kinds.causal import CausalKind
from ept.kinds.encoder import EncoderKind, encode_pairs
from ept.kinds.seq2seq import Seq2SeqKind
from ept.registry import Registry

KINDS: Registry[type[Kind]] = Registry("backbone kind")
for _cls in (EncoderKind, Seq2SeqKind, CausalKind):
    KINDS.register(_cls.name, _cls)


def encode(tokenizer, examples, kind: str, max_length: int, pair_encoding: str = "cross", spec=None):
    """Features of a split for a backbone of `kind` (tokenised once, at setup). `pair_encoding=
    "siamese"` (needs `spec`, a pair task, an encoder) encodes the two sides apart; otherwise
    pairs are joined with [SEP] (encoders) or rendered in the task's source (seq2seq, causal)."""
    if pair_encoding == "siamese":
        if not KINDS.get(kind).segment_pairs or spec is None:
            raise ValueError(f"pair_encoding=siamese needs an encoder backbone and the task spec (got kind {kind!r})")
        return encode_pairs(tokenizer, examples, spec, max_length)
    if pair_encoding != "cross":
        raise ValueError(f"pair_encoding={pair_encoding!r}; allowed: cross, siamese")
    return KINDS.get(kind).encode(tokenizer, examples, max_length, spec)
