"""How an encoder backbone turns token states into one sentence embedding.

A sentence-transformers model folder says it in `modules.json` (is there a `Normalize` module?)
and `1_Pooling/config.json` (`pooling_mode_mean_tokens`, `..._cls_token`, ...). We read those two
files ourselves instead of loading `sentence_transformers.SentenceTransformer`: we need the
recipe, not its modules, because the prompt is prepended to the inputs and must be left out of
the pooled positions. A folder without them (a plain BERT checkpoint, a hub id) gets the
documented default: mean pooling + L2 normalisation (what all-MiniLM-L6-v2 uses). To change it,
put a sentence-transformers `1_Pooling/config.json` (and `modules.json`) in the model folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

MODES = ("mean", "cls", "max", "mean_sqrt_len")
_ST_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
            "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


@dataclass(frozen=True)
class PoolingRecipe:
    mode: str = "mean"
    normalize: bool = True
    source: str = "default (mean pooling + L2 normalisation)"

    def to_dict(self) -> dict:
        return asdict(self)


def read_pooling(model_dir: str | None) -> PoolingRecipe:
    """The recipe of a local sentence-transformers folder, else the stated default."""
    folder = Path(model_dir) if model_dir else None
    config = folder / "1_Pooling" / "config.json" if folder else None
    if config is None or not config.is_file():
        where = f"{folder} has no 1_Pooling/config.json" if folder else "no model folder"
        return PoolingRecipe(source=f"default: {where}; mean pooling + L2 normalisation "
                                    "(add a sentence-transformers 1_Pooling/config.json to change it)")
    data = json.loads(config.read_text())
    on = [mode for key, mode in _ST_KEYS.items() if data.get(key)]
    if data.get("pooling_mode") in MODES:  # newer sentence-transformers write the mode by name
        on = [data["pooling_mode"]]
    other = [k for k, v in data.items() if k.startswith("pooling_mode") and v is True and k not in _ST_KEYS]
    if len(on) != 1 or other:
        raise ValueError(f"{config}: pooling {on + other or 'none'} is not supported; "
                         f"exactly one of {', '.join(MODES)} must be on")
    modules = folder / "modules.json"
    normalize = modules.is_file() and any(m.get("type", "").endswith("Normalize")
                                          for m in json.loads(modules.read_text()))
    return PoolingRecipe(on[0], normalize, source=str(config))


def pool(hidden: torch.Tensor, mask: torch.Tensor, recipe: PoolingRecipe) -> torch.Tensor:
    """(B, L, e) token states and their (B, L) mask -> (B, e) fp32 sentence embeddings."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if recipe.mode == "cls":
        out = hidden[:, 0]
    elif recipe.mode == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:
        total, count = (hidden * m).sum(1), m.sum(1).clamp(min=1)
        out = total / (count.sqrt() if recipe.mode == "mean_sqrt_len" else count)
    out = out.float()
    return nn.functional.normalize(out, dim=-1) if recipe.normalize else out
