"""A bank of per-task soft prompts: one module that hands each row of a batch its own task's prompt.

    bank = PromptBank(embed_dim=384)
    bank.add("sst2", p1)           # P' (1, e): EPT
    bank.add("rte", p2)            # P' (10, e): PT
    prompts, mask = bank(torch.tensor([0, 1, 0]))   # (3, 10, e), (3, 10)

The shape is PEFT's `get_prompt(batch_size, task_ids)` (multitask prompt tuning), except that
tasks may have prompts of different lengths (EPT n=1 beside PT/EPT* n=10). Every prompt is
LEFT-padded to the longest one with a mask: padding first, then the real prompt rows next to the
input, so T5's relative distances match the row run alone (BERT-family positions are re-based in
`PromptedModel.build_inputs`). `forward` keeps only the last n_b columns, n_b being the longest
prompt among the batch's rows, so a batch of EPT rows is not widened by a PT task elsewhere.

Tasks are added, replaced and removed by name at any time (hot reload when serving); the padded
table is rebuilt lazily on the next forward, so a change costs one (T, n_max, e) copy, not one
per batch. Task ids are positions in `names()`, which shift when a task is removed: resolve names
with `ids()` after any change.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptBank(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self._prompts: dict[str, torch.Tensor] = {}  # name -> P' (n, e), fp32, insertion order = id
        self.register_buffer("table", torch.zeros(0, 1, embed_dim), persistent=False)  # (T, n_max, e)
        self.register_buffer("mask", torch.zeros(0, 1, dtype=torch.long), persistent=False)  # (T, n_max)
        self.register_buffer("lengths", torch.zeros(0, dtype=torch.long), persistent=False)  # (T,)
        self._index: dict[str, int] = {}
        self._stale = False

    # ------------------------------------------------------------------ registry
    def add(self, name: str, prompt: torch.Tensor, replace: bool = False) -> None:
        """Store P' (n, e) under `name`; a NaN/inf or wrongly shaped prompt is refused here, at load."""
        if name in self._prompts and not replace:
            raise ValueError(f"prompt {name!r} is already in the bank; loaded: {', '.join(self._prompts)}")
        self._prompts[name] = self.check(name, prompt, self.embed_dim).to(self.table.device)
        self._stale = True

    @staticmethod
    def check(name: str, prompt: torch.Tensor, embed_dim: int) -> torch.Tensor:
        """P' as fp32 (n, e), or a ValueError naming the task: wrong shape, NaN or inf."""
        prompt = torch.as_tensor(prompt).detach().float()
        if prompt.dim() != 2 or prompt.shape[0] < 1 or prompt.shape[1] != embed_dim:
            raise ValueError(f"prompt {name!r} has shape {tuple(prompt.shape)}; this backbone needs (n, {embed_dim})")
        if not torch.isfinite(prompt).all():
            bad = int((~torch.isfinite(prompt)).sum())
            raise ValueError(f"prompt {name!r} has {bad} NaN/inf values; re-export it from a healthy checkpoint")
        return prompt

    def remove(self, name: str) -> None:
        if name not in self._prompts:
            raise KeyError(f"prompt {name!r} is not in the bank; loaded: {', '.join(self._prompts) or '(none)'}")
        del self._prompts[name]
        self._stale = True

    def names(self) -> list[str]:
        return list(self._prompts)

    def __contains__(self, name: str) -> bool:
        return name in self._prompts

    def __len__(self) -> int:
        return len(self._prompts)

    def get(self, name: str) -> torch.Tensor:
        """P' (n, e) of one task, unpadded."""
        return self._prompts[name]

    def ids(self, names) -> torch.Tensor:
        """Task ids (positions in `names()`) of a batch's task names, (B,)."""
        if self._stale:
            self._rebuild()
        return torch.tensor([self._index[n] for n in names], dtype=torch.long, device=self.table.device)

    # ------------------------------------------------------------------ forward
    def _rebuild(self) -> None:
        prompts = list(self._prompts.values())
        n = torch.tensor([p.shape[0] for p in prompts], dtype=torch.long)
        n_max = int(n.max()) if len(prompts) else 1
        table = self.table.new_zeros(len(prompts), n_max, self.embed_dim)
        mask = self.mask.new_zeros(len(prompts), n_max)
        for i, p in enumerate(prompts):
            table[i, n_max - p.shape[0]:] = p  # left padding: real rows last, next to the input
            mask[i, n_max - p.shape[0]:] = 1
        self.table, self.mask, self.lengths = table, mask, n.to(self.table.device)
        self._index = {name: i for i, name in enumerate(self._prompts)}
        self._stale = False

    def forward(self, task_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompts (B, n_b, e), mask (B, n_b)) for a batch's task ids (B,), left-padded to n_b."""
        if self._stale:
            self._rebuild()
        task_ids = torch.as_tensor(task_ids, device=self.table.device)
        n_b = int(self.lengths[task_ids].max())
        return self.table[task_ids, -n_b:], self.mask[task_ids, -n_b:]

    def prompt_lengths(self) -> torch.Tensor:
        """n per task id (T,)."""
        if self._stale:
            self._rebuild()
        return self.lengths
