"""The methods' configs and their registry, apart from the torch modules (as PEFT keeps
`config.py` apart from `model.py`): `ept --help`, `ept params` for the prompt methods, config
files and sweep specs are read and validated without importing torch.

Every method is a `<Name>Config` dataclass here and a `<Name>Encoder` module in `ept.prompts`.
A field's annotation is its type on the command line and in config files (`ept.flags`); its
metadata holds its help text and range.

Shapes use the paper's letters: n prompt tokens, e embedding dim, h hidden size.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Literal

from ept.flags import validate
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


@dataclass
class MethodConfig:
    """What every method config has: its registry name and class-level facts, the type/range
    validation of its fields and the dict form written into checkpoints. No fields of its own:
    prompt methods add theirs in `PromptConfig`, ft/lora/ia3 theirs in their own classes."""

    method: ClassVar[str] = ""
    trains_backbone: ClassVar[bool] = False
    has_prompt: ClassVar[bool] = True  # False for ft and the PEFT-injected baselines
    default_lr: ClassVar[float] = 0.3  # the paper's prompt lr (Appendix B.2)

    def __post_init__(self):
        validate(self)  # types and ranges of every field, from its annotation and metadata

    @property
    def name(self) -> str:
        """The registry name (`ept_star` for `ept*`), as in run folders and results."""
        return self.method

    def to_dict(self) -> dict:
        d = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}
        return {"method": self.method, **d}

    def options(self) -> dict:
        """The fields that differ from the method's defaults: `method_options` in config.json.
        A default given explicitly is the same run as one left out."""
        default = type(self)().to_dict()
        return {k: v for k, v in self.to_dict().items() if k != "method" and v != default[k]}

    def inference_params(self, embed_dim: int) -> int:
        return 0  # no prompt: ft counts the whole backbone, lora/ia3 their layers (backbones.param_counts)

    def encoder_params(self, embed_dim: int) -> int | None:
        """Trainable parameters of the prompt encoder (`ept.prompts`), counted from the config
        alone so `ept params` needs no torch; None when they depend on the backbone's layers
        (ft, lora, ia3). tests/test_params.py checks every formula against the torch module."""
        return None


@dataclass
class PromptConfig(MethodConfig):
    """Fields shared by every prompt method."""

    num_tokens: int = field(default=10, metadata={"help": "n: prompt tokens prepended to the input", "min": 1})
    init: Init = field(default=Init.UNIFORM, metadata={"help": "uniform | vocab | label | text (paper Table 6)"})
    init_text: str | None = field(default=None, metadata={"help": "text for init=text"})

    def __post_init__(self):
        super().__post_init__()
        if self.init is Init.TEXT and not self.init_text:
            raise ValueError("init=text needs init_text")
        if self.init is not Init.TEXT and self.init_text:
            raise ValueError(f"init_text is only used with init=text, not init={self.init.value}")

    def inference_params(self, embed_dim: int) -> int:
        """Floats needed at inference: the projected prompt, network discarded (paper Table 4)."""
        return self.num_tokens * embed_dim

    def encoder_params(self, embed_dim: int) -> int | None:
        return self.num_tokens * embed_dim  # the raw prompt P (n, e); subclasses add their network


# --------------------------------------------------------------------------- PT (Lester et al.)
@dataclass
class PTConfig(PromptConfig):
    """Vanilla prompt tuning: n free vectors, no network."""

    method: ClassVar[str] = "pt"


# --------------------------------------------------------------------------- P-Tuning (Liu et al.)
@dataclass
class PTuningConfig(PromptConfig):
    """P-Tuning as PEFT's `PromptEncoder`: MLP e->h->h->e (bias, ReLU) or a bi-LSTM head."""

    encoder: Literal["mlp", "lstm"] = field(default="mlp", metadata={"help": "mlp | lstm (PEFT encoder_reparameterization_type)"})
    hidden_size: int | None = field(default=None, metadata={"help": "h; None means h = e (PEFT default)", "min": 1})
    lstm_layers: int = field(default=2, metadata={"help": "LSTM layers (PEFT encoder_num_layers; lstm only)", "min": 1})
    method: ClassVar[str] = "ptuning"

    def encoder_params(self, embed_dim: int) -> int:
        e, h = embed_dim, self.hidden_size or embed_dim
        if self.encoder == "mlp":  # Linear(e,h) ReLU Linear(h,h) ReLU Linear(h,e), with biases
            return super().encoder_params(e) + (e * h + h) + (h * h + h) + (h * e + e)
        # bi-LSTM: per layer and direction 4h x (input + h) weights and two 4h biases; layer 0 reads
        # e, the others 2h; then Linear(2h,2h) ReLU Linear(2h,e)
        lstm = sum(2 * (4 * h * ((e if i == 0 else 2 * h) + h) + 8 * h) for i in range(self.lstm_layers))
        return super().encoder_params(e) + lstm + (4 * h * h + 2 * h) + (2 * h * e + e)

    def __post_init__(self):
        super().__post_init__()
        if self.encoder == "mlp" and self.lstm_layers != 2:
            # PEFT silently ignores encoder_num_layers for the MLP; we refuse instead.
            raise ValueError("lstm_layers is only used with encoder=lstm")


# --------------------------------------------------------------------------- ResPrompt
@dataclass
class ResPromptConfig(PromptConfig):
    """Residual Prompt Tuning (Razdaibiedina et al. 2023): one MLP shared by all n tokens,
    Linear(e->b) ReLU Linear(b->e) LayerNorm(e), plus the raw prompt (LN inside the branch)."""

    bottleneck: int = field(default=400, metadata={"help": "b: bottleneck width (paper: 400)", "min": 1})
    layer_norm: bool = field(default=True, metadata={"help": "LayerNorm at the end of the branch"})
    residual: bool = field(default=True, metadata={"help": "add the raw prompt to the branch output"})
    method: ClassVar[str] = "resprompt"

    def encoder_params(self, embed_dim: int) -> int:
        e, b = embed_dim, self.bottleneck  # Linear(e,b) ReLU Linear(b,e) [LayerNorm(e)]
        return super().encoder_params(e) + (e * b + b) + (b * e + e) + (2 * e if self.layer_norm else 0)


# --------------------------------------------------------------------------- EPT / EPT*
@dataclass
class EPTConfig(PromptConfig):
    """EPT (paper Section 3.3): ONE vector P1 in R^e, phi(x) = W_up(W_down x) with hidden size h,
    no bias, activation, norm or residual; phi(P1) broadcast n times (EPT n=1, EPT* n=10).
    The switches below exist only for the paper's ablations (Fig. 5, 7, 9)."""

    num_tokens: int = field(default=1, metadata={"help": "n: broadcast copies of phi(P1) (EPT 1, EPT* 10)", "min": 1})
    hidden_size: int = field(default=1, metadata={"help": "h: width of the down-up bottleneck", "min": 1})
    bias: bool = field(default=False, metadata={"help": "ablation: biases in W_down and W_up"})
    layer_norm: bool = field(default=False, metadata={"help": "ablation: LayerNorm(e) after W_up"})
    residual: bool = field(default=False, metadata={"help": "ablation: add P1 to phi(P1)"})
    activation: Activation = field(default=Activation.NONE, metadata={"help": "ablation: none|relu|gelu|tanh|sigmoid"})
    method: ClassVar[str] = "ept"

    def inference_params(self, embed_dim: int) -> int:
        return embed_dim  # one vector, broadcast n times at no cost

    def encoder_params(self, embed_dim: int) -> int:
        e, h = embed_dim, self.hidden_size  # P1 (1, e), W_down (h, e), W_up (e, h) [+ biases] [LayerNorm(e)]
        return e + 2 * e * h + ((h + e) if self.bias else 0) + (2 * e if self.layer_norm else 0)


@dataclass
class EPTStarConfig(EPTConfig):
    num_tokens: int = field(default=10, metadata={"help": "n: broadcast copies of phi(P1) (EPT 1, EPT* 10)", "min": 1})
    method: ClassVar[str] = "ept_star"


# --------------------------------------------------------------------------- FT (baseline)
@dataclass
class FTConfig(MethodConfig):
    """Full fine-tuning of the backbone: no prompt, no switches."""

    method: ClassVar[str] = "ft"
    trains_backbone: ClassVar[bool] = True
    has_prompt: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-5  # the paper's fine-tuning lr


# --------------------------------------------------------------------------- PEFT-library baselines
@dataclass
class _InjectedConfig(MethodConfig):
    """Methods that add no prompt but inject trainable layers through the PEFT library
    (`peft.inject_adapter_in_model`), for the paper's Table 4 comparison."""

    has_prompt: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3  # LoRA/(IA)^3's usual order; 0.3 would diverge

    def peft_config(self):
        raise NotImplementedError


@dataclass
class LoRAConfig(_InjectedConfig):
    """LoRA (Hu et al. 2021) via PEFT; target modules default to PEFT's per-architecture choice
    (T5: q, v; BERT: query, value)."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank r", "min": 1})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha", "min": 1})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout probability", "min": 0.0, "lt": 1.0})
    method: ClassVar[str] = "lora"

    def peft_config(self):
        from peft import LoraConfig  # lazily: peft imports torch

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)


@dataclass
class IA3Config(_InjectedConfig):
    """(IA)^3 (Liu et al. 2022) via PEFT, with PEFT's default target modules."""

    method: ClassVar[str] = "ia3"

    def peft_config(self):
        from peft import IA3Config as PeftIA3Config  # lazily: peft imports torch

        return PeftIA3Config()


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    summary: str


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, config_cls, summary: str, *aliases: str) -> None:
    METHODS.register(name, Method(name, config_cls, summary), *aliases)


register_method("pt", PTConfig, "vanilla prompt tuning, n=10")
register_method("ptuning", PTuningConfig, "P-Tuning (PEFT PromptEncoder MLP/LSTM), n=10", "p-tuning")
register_method("resprompt", ResPromptConfig, "Residual Prompt Tuning (b=400, LN), n=10")
register_method("ept", EPTConfig, "EPT: one vector, linear down-up h=1, n=1")
register_method("ept_star", EPTStarConfig, "EPT*: EPT broadcast n=10", "ept*")
register_method("ft", FTConfig, "full fine-tuning (no prompt)")
register_method("lora", LoRAConfig, "LoRA through the PEFT library (r=8, no prompt)")
register_method("ia3", IA3Config, "(IA)^3 through the PEFT library (no prompt)")


def method_config(name: str, **overrides) -> MethodConfig:
    """Build a method's config; a switch the method does not have is an error naming the allowed ones."""
    method = METHODS.get(name)
    allowed = {f.name for f in fields(method.config_cls)}
    unknown = sorted(k for k, v in overrides.items() if k not in allowed and v is not None)
    if unknown:
        what = f"{method.name} has no prompt: " if not method.config_cls.has_prompt and _PROMPT_FIELDS & set(unknown) else ""
        raise ValueError(f"{what}method {method.name!r} has no option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    return method.config_cls(**{k: v for k, v in overrides.items() if v is not None})


# What configs of ft/lora/ia3 held before they stopped inheriting the prompt fields: checkpoints
# and config.json files written then still carry them, at these values (nothing else was allowed).
_PROMPT_FIELDS = {"num_tokens", "init", "init_text"}
_LEGACY_NO_PROMPT = {"num_tokens": 1, "init": "uniform", "init_text": None}


def config_from_dict(d: dict) -> MethodConfig:
    """The config of a stored dict (`MethodConfig.to_dict()`, a checkpoint's `prompt` entry)."""
    d = dict(d)
    name = d.pop("method")
    return method_config(name, **drop_legacy(name, d))


def drop_legacy(name: str, options: dict) -> dict:
    """`options` without the prompt fields an older ft/lora/ia3 config stored at their only values."""
    if METHODS.get(name).config_cls.has_prompt:
        return dict(options)
    return {k: v for k, v in options.items() if not (k in _LEGACY_NO_PROMPT and v == _LEGACY_NO_PROMPT[k])}


def option_names() -> set[str]:
    """Every switch of every method (the union of their config fields)."""
    return {f.name for _, m in METHODS.items() for f in fields(m.config_cls)}
