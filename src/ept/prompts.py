"""Soft prompts and their reparameterization networks (EPT paper, Sections 3.1-3.3).

Every method is a `<Name>Config` dataclass beside a `<Name>Encoder` module, registered once at
the bottom of this file. An encoder takes no input: `encoder()` returns the prompt P' of shape
(n, e) that the backbone wrapper broadcasts over the batch. Computing it once per forward and
broadcasting (rather than running the network on batch-repeated inputs) is what PEFT settled on
in PR #2047: it is cheaper and bit-identical between training and a reloaded export.

Shapes use the paper's letters: n prompt tokens, e embedding dim, h hidden size.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, ClassVar

import torch
from torch import nn

from ept.registry import Registry


class Init(str, enum.Enum):
    """Prompt initialisation (paper Appendix B.4, Table 6)."""

    UNIFORM = "uniform"  # U[-0.5, 0.5], the paper's default
    VOCAB = "vocab"  # rows copied from randomly sampled vocabulary embeddings
    LABEL = "label"  # rows copied from the embeddings of the task's label words
    TEXT = "text"  # rows copied from the embeddings of a given text, tiled to n


class Activation(str, enum.Enum):
    NONE = "none"
    RELU = "relu"
    GELU = "gelu"
    TANH = "tanh"
    SIGMOID = "sigmoid"


ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    Activation.NONE: nn.Identity,
    Activation.RELU: nn.ReLU,
    Activation.GELU: nn.GELU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
}


def _enum(cls: type[enum.Enum], value, name: str):
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {allowed}") from None


@dataclass
class PromptConfig:
    """Fields shared by every prompt method."""

    num_tokens: int = field(default=10, metadata={"help": "n: prompt tokens prepended to the input"})
    init: Init = field(default=Init.UNIFORM, metadata={"help": "uniform | vocab | label | text (paper Table 6)"})
    init_text: str | None = field(default=None, metadata={"help": "text for init=text"})
    method: ClassVar[str] = ""
    trains_backbone: ClassVar[bool] = False
    has_prompt: ClassVar[bool] = True  # False for ft and the PEFT-injected baselines
    default_lr: ClassVar[float] = 0.3  # the paper's prompt lr (Appendix B.2)

    def __post_init__(self):
        self.init = _enum(Init, self.init, "init")
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise ValueError(f"num_tokens (n) must be an integer >= 1, got {self.num_tokens!r}")
        if self.init is Init.TEXT and not self.init_text:
            raise ValueError("init=text needs init_text")
        if self.init is not Init.TEXT and self.init_text:
            raise ValueError(f"init_text is only used with init=text, not init={self.init.value}")

    def to_dict(self) -> dict:
        d = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}
        return {"method": self.method, **d}

    def inference_params(self, embed_dim: int) -> int:
        """Floats needed at inference: the projected prompt, network discarded (paper Table 4)."""
        return self.num_tokens * embed_dim


class PromptEncoder(nn.Module):
    """Base: a trainable raw prompt P (rows, e) and a network mapping it to P' (n, e)."""

    def __init__(self, config: PromptConfig, embed_dim: int, rows: int):
        super().__init__()
        self.config, self.embed_dim = config, embed_dim
        # fp32 always: the backbone may run in bf16/fp16; we cast at concatenation time.
        self.prompt = nn.Parameter(torch.empty(rows, embed_dim).uniform_(-0.5, 0.5))

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def project(self, prompt: torch.Tensor) -> torch.Tensor:
        return prompt

    def forward(self) -> torch.Tensor:
        return self.project(self.prompt)  # (n, e)

    @torch.no_grad()
    def init_from_rows(self, rows: torch.Tensor) -> None:
        """Copy embedding rows into the raw prompt, tiling them when fewer than needed."""
        rows = rows.to(self.prompt.dtype)
        reps = -(-self.prompt.shape[0] // rows.shape[0])
        self.prompt.copy_(rows.repeat(reps, 1)[: self.prompt.shape[0]])


# --------------------------------------------------------------------------- PT (Lester et al.)
@dataclass
class PTConfig(PromptConfig):
    """Vanilla prompt tuning: n free vectors, no network."""

    method: ClassVar[str] = "pt"


class PTEncoder(PromptEncoder):
    def __init__(self, config: PTConfig, embed_dim: int):
        super().__init__(config, embed_dim, rows=config.num_tokens)


# --------------------------------------------------------------------------- P-Tuning (Liu et al.)
@dataclass
class PTuningConfig(PromptConfig):
    """P-Tuning as PEFT's `PromptEncoder`: MLP e->h->h->e (bias, ReLU) or a bi-LSTM head."""

    encoder: str = field(default="mlp", metadata={"help": "mlp | lstm (PEFT encoder_reparameterization_type)"})
    hidden_size: int | None = field(default=None, metadata={"help": "h; None means h = e (PEFT default)"})
    lstm_layers: int = field(default=2, metadata={"help": "LSTM layers (PEFT encoder_num_layers; lstm only)"})
    method: ClassVar[str] = "ptuning"

    def __post_init__(self):
        super().__post_init__()
        if self.encoder not in ("mlp", "lstm"):
            raise ValueError(f"encoder={self.encoder!r} is not allowed; allowed: mlp, lstm")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ValueError(f"hidden_size (h) must be >= 1, got {self.hidden_size}")
        if self.encoder == "mlp" and self.lstm_layers != 2:
            # PEFT silently ignores encoder_num_layers for the MLP; we refuse instead.
            raise ValueError("lstm_layers is only used with encoder=lstm")


class PTuningEncoder(PromptEncoder):
    def __init__(self, config: PTuningConfig, embed_dim: int):
        super().__init__(config, embed_dim, rows=config.num_tokens)
        # PEFT initialises the input embedding N(0, 1); we keep ept's init schemes instead.
        h = config.hidden_size or embed_dim
        if config.encoder == "mlp":
            self.lstm = None
            self.mlp = nn.Sequential(
                nn.Linear(embed_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, embed_dim)
            )
        else:
            self.lstm = nn.LSTM(embed_dim, h, num_layers=config.lstm_layers, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, embed_dim))

    def project(self, prompt: torch.Tensor) -> torch.Tensor:
        if self.lstm is not None:
            prompt = self.lstm(prompt.unsqueeze(0))[0].squeeze(0)  # (n, 2h)
        return self.mlp(prompt)


# --------------------------------------------------------------------------- ResPrompt
@dataclass
class ResPromptConfig(PromptConfig):
    """Residual Prompt Tuning (Razdaibiedina et al. 2023): one MLP shared by all n tokens,
    Linear(e->b) ReLU Linear(b->e) LayerNorm(e), plus the raw prompt (LN inside the branch)."""

    bottleneck: int = field(default=400, metadata={"help": "b: bottleneck width (paper: 400)"})
    layer_norm: bool = field(default=True, metadata={"help": "LayerNorm at the end of the branch"})
    residual: bool = field(default=True, metadata={"help": "add the raw prompt to the branch output"})
    method: ClassVar[str] = "resprompt"

    def __post_init__(self):
        super().__post_init__()
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")


class ResPromptEncoder(PromptEncoder):
    def __init__(self, config: ResPromptConfig, embed_dim: int):
        super().__init__(config, embed_dim, rows=config.num_tokens)
        layers = [nn.Linear(embed_dim, config.bottleneck), nn.ReLU(), nn.Linear(config.bottleneck, embed_dim)]
        if config.layer_norm:
            layers.append(nn.LayerNorm(embed_dim))
        self.mlp = nn.Sequential(*layers)

    def project(self, prompt: torch.Tensor) -> torch.Tensor:
        out = self.mlp(prompt)  # (n, e)
        return out + prompt if self.config.residual else out


# --------------------------------------------------------------------------- EPT / EPT*
@dataclass
class EPTConfig(PromptConfig):
    """EPT (paper Section 3.3): ONE vector P1 in R^e, phi(x) = W_up(W_down x) with hidden size h,
    no bias, activation, norm or residual; phi(P1) broadcast n times (EPT n=1, EPT* n=10).
    The switches below exist only for the paper's ablations (Fig. 5, 7, 9)."""

    num_tokens: int = field(default=1, metadata={"help": "n: broadcast copies of phi(P1) (EPT 1, EPT* 10)"})
    hidden_size: int = field(default=1, metadata={"help": "h: width of the down-up bottleneck"})
    bias: bool = field(default=False, metadata={"help": "ablation: biases in W_down and W_up"})
    layer_norm: bool = field(default=False, metadata={"help": "ablation: LayerNorm(e) after W_up"})
    residual: bool = field(default=False, metadata={"help": "ablation: add P1 to phi(P1)"})
    activation: Activation = field(default=Activation.NONE, metadata={"help": "ablation: none|relu|gelu|tanh|sigmoid"})
    method: ClassVar[str] = "ept"

    def __post_init__(self):
        super().__post_init__()
        self.activation = _enum(Activation, self.activation, "activation")
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"hidden_size (h) must be an integer >= 1, got {self.hidden_size!r}")

    def inference_params(self, embed_dim: int) -> int:
        return embed_dim  # one vector, broadcast n times at no cost


@dataclass
class EPTStarConfig(EPTConfig):
    num_tokens: int = field(default=10, metadata={"help": "n: broadcast copies of phi(P1) (EPT 1, EPT* 10)"})
    method: ClassVar[str] = "ept_star"


class EPTEncoder(PromptEncoder):
    def __init__(self, config: EPTConfig, embed_dim: int):
        super().__init__(config, embed_dim, rows=1)  # P1: (1, e)
        c = config
        layers = [nn.Linear(embed_dim, c.hidden_size, bias=c.bias), ACTIVATIONS[c.activation]()]
        layers.append(nn.Linear(c.hidden_size, embed_dim, bias=c.bias))
        if c.layer_norm:
            layers.append(nn.LayerNorm(embed_dim))
        self.phi = nn.Sequential(*layers)

    def project(self, prompt: torch.Tensor) -> torch.Tensor:
        out = self.phi(prompt)  # (1, e)
        if self.config.residual:
            out = out + prompt
        return out.expand(self.config.num_tokens, -1)  # broadcast: (n, e), a view, no copy


# --------------------------------------------------------------------------- FT (baseline)
@dataclass
class FTConfig(PromptConfig):
    """Full fine-tuning of the backbone: no prompt at all (num_tokens is ignored and must stay 1)."""

    num_tokens: int = field(default=1, metadata={"help": "unused by ft"})
    method: ClassVar[str] = "ft"
    trains_backbone: ClassVar[bool] = True
    has_prompt: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-5  # the paper's fine-tuning lr

    def __post_init__(self):
        super().__post_init__()
        if self.num_tokens != 1 or self.init is not Init.UNIFORM:
            raise ValueError("ft has no prompt: num_tokens and init cannot be set")

    def inference_params(self, embed_dim: int) -> int:
        return 0  # counted by the caller as the whole backbone


class FTEncoder(nn.Module):
    """Placeholder so every method has an encoder; ft, lora and ia3 prepend nothing."""

    def __init__(self, config: FTConfig, embed_dim: int):
        super().__init__()
        self.config, self.embed_dim = config, embed_dim

    num_tokens = 0

    def forward(self) -> None:
        return None


# --------------------------------------------------------------------------- PEFT-library baselines
@dataclass
class _InjectedConfig(PromptConfig):
    """Methods that add no prompt but inject trainable layers through the PEFT library
    (`peft.inject_adapter_in_model`), for the paper's Table 4 comparison. num_tokens/init unused."""

    num_tokens: int = field(default=1, metadata={"help": "unused by PEFT-injected methods"})
    has_prompt: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3  # LoRA/(IA)^3's usual order; 0.3 would diverge

    def __post_init__(self):
        super().__post_init__()
        if self.num_tokens != 1 or self.init is not Init.UNIFORM:
            raise ValueError(f"{self.method} has no prompt: num_tokens and init cannot be set")

    def peft_config(self):
        raise NotImplementedError

    def inference_params(self, embed_dim: int) -> int:
        return 0  # counted on the backbone by backbones.param_counts


@dataclass
class LoRAConfig(_InjectedConfig):
    """LoRA (Hu et al. 2021) via PEFT; target modules default to PEFT's per-architecture choice
    (T5: q, v; BERT: query, value)."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    method: ClassVar[str] = "lora"

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)


@dataclass
class IA3Config(_InjectedConfig):
    """(IA)^3 (Liu et al. 2022) via PEFT, with PEFT's default target modules."""

    method: ClassVar[str] = "ia3"

    def peft_config(self):
        from peft import IA3Config as PeftIA3Config

        return PeftIA3Config()


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[PromptConfig]
    encoder_cls: type[nn.Module]
    summary: str


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, config_cls, encoder_cls, summary: str, *aliases: str) -> None:
    METHODS.register(name, Method(name, config_cls, encoder_cls, summary), *aliases)


register_method("pt", PTConfig, PTEncoder, "vanilla prompt tuning, n=10")
register_method("ptuning", PTuningConfig, PTuningEncoder, "P-Tuning (PEFT PromptEncoder MLP/LSTM), n=10", "p-tuning")
register_method("resprompt", ResPromptConfig, ResPromptEncoder, "Residual Prompt Tuning (b=400, LN), n=10")
register_method("ept", EPTConfig, EPTEncoder, "EPT: one vector, linear down-up h=1, n=1")
register_method("ept_star", EPTStarConfig, EPTEncoder, "EPT*: EPT broadcast n=10", "ept*")
register_method("ft", FTConfig, FTEncoder, "full fine-tuning (no prompt)")
register_method("lora", LoRAConfig, FTEncoder, "LoRA through the PEFT library (r=8, no prompt)")
register_method("ia3", IA3Config, FTEncoder, "(IA)^3 through the PEFT library (no prompt)")


def method_config(name: str, **overrides) -> PromptConfig:
    """Build a method's config; a switch the method does not have is an error naming the allowed ones."""
    method = METHODS.get(name)
    allowed = {f.name for f in fields(method.config_cls)}
    unknown = sorted(k for k, v in overrides.items() if k not in allowed and v is not None)
    if unknown:
        raise ValueError(f"method {method.name!r} has no option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return method.config_cls(**{k: v for k, v in overrides.items() if v is not None})


def config_from_dict(d: dict) -> PromptConfig:
    d = dict(d)
    return method_config(d.pop("method"), **d)


def build_encoder(config: PromptConfig, embed_dim: int) -> nn.Module:
    return METHODS.get(config.method).encoder_cls(config, embed_dim)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
