"""`ept analyze residual`: does the prompt dominate the residual stream, layer by layer?

EPT's claim is that a prompt of huge norm works. In a pre-LayerNorm transformer each layer reads a
normalised copy of the residual stream and ADDS its update to it, so a prompt position whose
residual has norm 1e4 keeps it through every layer unless the updates grow as large. This
measures, for a trained run on real rows, per layer l and per kind of position (sink/BOS, prompt,
input): the mean L2 norm of the residual stream entering layer l, and of layer l's update
(output minus input). The input positions' residual is the backbone working on the task; when
the prompt positions' norm is orders of magnitude above it at every layer, every later layer's
attention reads a stream the prompt dominates.

Two more groups overlap those three: `slot0`, each row's first real position, and `prompt_rest`,
the prompt positions after it. A causal LM parks its attention sink in the first slot and grows a
massive activation there; without BOS or a sink token that slot is P'_0, so PT's prompt mean mixes
the sink with its other nine vectors. `slot0` and `prompt_rest` tell the two apart (EPT's single
vector is slot0 itself then, and it has no `prompt_rest`).

Captured with forward hooks on the backbone's layer list (the first `nn.ModuleList` as long as
`num_hidden_layers`: Llama/Gemma `layers`, BERT `encoder.layer`, T5 `encoder.block`), so it needs
no model-specific code. `hidden_states` is not used because decoder-only models apply their final
norm to its last entry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ept.analysis.output import figure, label, save_figure, write_csv
from ept.analysis.prober import Prober
from ept.analysis.runs import RunRecord

KINDS = ("sink", "prompt", "input")  # a partition of the real positions; slot0 and prompt_rest overlap it


def layer_list(backbone) -> nn.ModuleList:
    n = getattr(backbone.config, "num_hidden_layers", None) or getattr(backbone.config, "num_layers", None)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"{type(backbone).__name__}: no list of {n} layers found to hook")


@torch.no_grad()
def residual_norms(model, batch: dict) -> dict[str, torch.Tensor]:
    """{group: (layers + 1, 2)} for KINDS, slot0 and prompt_rest, those with positions here: per layer the mean residual
    norm entering it (last row: the stream after the last layer) and its update's mean norm (last
    row: NaN), over that group's positions."""
    kwargs = model.build_inputs(batch)
    mask = kwargs["attention_mask"].bool()  # (B, S): real positions
    S, L, n = mask.shape[1], batch["input_ids"].shape[1], model.num_prompt_tokens()
    kind = torch.full((S,), 2, device=mask.device)  # input
    kind[S - L - n:S - L] = 1  # prompt
    kind[:S - L - n] = 0  # BOS / sink before the prompt
    streams: list[torch.Tensor] = []

    def hook(_module, args, kw_args, output):
        hidden = args[0] if args else kw_args["hidden_states"]
        if not streams:
            streams.append(hidden.float())
        streams.append((output[0] if isinstance(output, tuple) else output).float())

    layers = layer_list(model.backbone)
    handles = [layer.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    try:
        model.kind_ops.prompt_stack(kwargs)
    finally:
        for h in handles:
            h.remove()
    res = torch.stack(streams)  # (layers + 1, B, S, e)
    norms = res.norm(dim=-1)  # (layers + 1, B, S)
    upd = (res[1:] - res[:-1]).norm(dim=-1)  # (layers, B, S)
    upd = torch.cat([upd, torch.full_like(upd[:1], float("nan"))])
    first = torch.arange(S, device=mask.device).unsqueeze(0) == mask.long().argmax(1, keepdim=True)  # (B, S): first real slot
    selections = {name: mask & (kind == k).unsqueeze(0) for k, name in enumerate(KINDS)}
    selections.update(slot0=first & mask, prompt_rest=selections["prompt"] & ~first)
    out = {}
    for name, sel in selections.items():
        if sel.any():
            out[name] = torch.stack([norms[:, sel].mean(1), upd[:, sel].mean(1)], dim=1)
    return out


def residual_rows(records: list[RunRecord], split: str = "validation", max_examples: int | None = 64,
                  data_dir: str | None = None) -> list[dict]:
    """Tidy rows: run, method, seed, layer (0 = the embeddings entering layer 0; `layers` = the
    output of the last), position kind, residual norm, update norm, and the prompt/input ratio."""
    from ept.batching import batches

    prober = Prober(data_dir)
    rows = []
    for r in records:
        model = prober.model(r)
        spec, examples = prober.examples(r, None, split, max_examples or 64)
        encoded = model_encode(model, spec, examples, r.config)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in batches(model.tokenizer, encoded, 16):
            stats = residual_norms(model, batch)
            w = batch["input_ids"].shape[0]
            for name, value in stats.items():
                sums[name] = sums.get(name, 0) + value * w
            count += w
        means = {name: value / count for name, value in sums.items()}
        for layer in range(next(iter(means.values())).shape[0]):
            base = means["input"][layer, 0].item()
            for name, value in means.items():
                rows.append({"run": r.name, "label": label(r), "method": r.method, "seed": r.seed, "layer": layer,
                             "position": name, "residual_norm": value[layer, 0].item(),
                             "update_norm": value[layer, 1].item(),
                             "ratio_to_input": value[layer, 0].item() / base if base else float("nan")})
    return rows


def model_encode(model, spec, examples, config: dict):
    from ept.heads import make_scorer

    scorer = make_scorer(model, spec, config.get("eval_mode"), pair_encoding="cross",
                         label_score_eos=config.get("label_score_eos", True))
    return scorer.encode(examples, config.get("max_length") or spec.max_length)


def draw_residual(rows: list[dict]):
    """Two panels: the residual norm per layer (log scale) and each layer's update norm, a line per
    (run, position group): solid prompt, dashed input, dotted sink, dash-dot the first slot."""
    fig, axes = figure((11, 4), 1, 2)
    style = {"prompt": "-", "input": "--", "sink": ":", "slot0": "-."}
    runs = list(dict.fromkeys(x["label"] for x in rows))
    for i, run in enumerate(runs):
        for kind, ls in style.items():
            pts = [x for x in rows if x["label"] == run and x["position"] == kind]
            if not pts:
                continue
            layers = [x["layer"] for x in pts]
            axes[0][0].plot(layers, [x["residual_norm"] for x in pts], ls, color=f"C{i}", label=f"{run} {kind}")
            axes[0][1].plot(layers[:-1], [x["update_norm"] for x in pts][:-1], ls, color=f"C{i}", label=f"{run} {kind}")
    for ax, what in zip(axes[0], ("residual stream norm entering the layer", "layer update norm")):
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(what)
        ax.legend(fontsize=6)
    return fig


def residual(records: list[RunRecord], out: Path, split: str = "validation", max_examples: int | None = None,
             data_dir: str | None = None, **_) -> dict:
    """Per-layer residual and update norms at sink, prompt and input positions (issue 19, item 4)."""
    records = [r for r in records if r.method != "ft"]
    if not records:
        raise ValueError("residual needs finished prompt runs (not ft)")
    rows = residual_rows(records, split, max_examples, data_dir)
    png = save_figure(draw_residual(rows), out / "residual.png")
    write_csv(out / "residual.csv", rows)
    return {"figure": str(png), "csv": str(out / "residual.csv")}
