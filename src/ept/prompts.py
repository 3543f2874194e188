"""Soft prompts and their reparameterization networks (EPT paper, Sections 3.1-3.3).

Every method is a `<Name>Config` dataclass in `ept.method_configs` (torch-free, re-exported here)
beside a `<Name>Encoder` module here, registered in `ENCODERS` at the bottom of this file. An
encoder takes no input: `encoder()` returns the prompt P' of shape (n, e) that the backbone
wrapper broadcasts over the batch. Computing it once per forward and broadcasting (rather than
running the network on batch-repeated inputs) is what PEFT settled on in PR #2047: it is cheaper
and bit-identical between training and a reloaded export.

Shapes use the paper's letters: n prompt tokens, e embedding dim, h hidden size.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ept.method_configs import (METHODS, Activation, EPTConfig, EPTStarConfig, FTConfig, IA3Config,  # noqa: F401
                                Init, LoRAConfig, Method, MethodConfig, PromptConfig, PTConfig, PTuningConfig, ResPromptConfig,
                                config_from_dict, method_config, register_method)

ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    Activation.NONE: nn.Identity,
    Activation.RELU: nn.ReLU,
    Activation.GELU: nn.GELU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
}


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
class PTEncoder(PromptEncoder):
    def __init__(self, config: PTConfig, embed_dim: int):
        super().__init__(config, embed_dim, rows=config.num_tokens)


# --------------------------------------------------------------------------- P-Tuning (Liu et al.)
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
class FTEncoder(nn.Module):
    """Placeholder so every method has an encoder; ft, lora and ia3 prepend nothing."""

    def __init__(self, config: FTConfig, embed_dim: int):
        super().__init__()
        self.config, self.embed_dim = config, embed_dim

    num_tokens = 0

    def forward(self) -> None:
        return None


# --------------------------------------------------------------------------- registry
# The configs' registry (`METHODS`) is torch-free in ept.method_configs; the modules are here.
ENCODERS: dict[str, type[nn.Module]] = {
    "pt": PTEncoder, "ptuning": PTuningEncoder, "resprompt": ResPromptEncoder, "ept": EPTEncoder,
    "ept_star": EPTEncoder, "ft": FTEncoder, "lora": FTEncoder, "ia3": FTEncoder,
}


def build_encoder(config: MethodConfig, embed_dim: int) -> nn.Module:
    return ENCODERS[METHODS.canonical(config.method)](config, embed_dim)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
