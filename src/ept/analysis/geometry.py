"""Geometry of learned prompts: token-token cosine similarity (paper Fig. 3) and nearest
vocabulary neighbours (Appendix A.1, after Lester et al. 2021).

Both read P' (n, e) of the best state from RUN/export; `neighbors` also needs the backbone's
input embedding table. Note for BERT-family backbones: the embedding LayerNorm rescales P'
before the first layer, so a large raw norm is not what the encoder sees; cosine (direction)
is unaffected.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ept.analysis.output import figure, label, save_figure, write_csv, write_json
from ept.analysis.runs import RunRecord, group_by, load_prompt


def cosine_matrix(prompt: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine similarity between the rows of P' (n, e)."""
    unit = torch.nn.functional.normalize(prompt.float(), dim=-1)
    return unit @ unit.T


def mean_off_diagonal(sim: torch.Tensor) -> float:
    n = sim.shape[0]
    if n < 2:
        return float("nan")
    return float((sim.sum() - sim.diagonal().sum()) / (n * n - n))


def similarity_rows(records: list[RunRecord]) -> dict:
    """{"cells": the cosine of every pair of prompt tokens per run, "runs": one summary row per run
    (mean off-diagonal and min cosine)}."""
    records = [r for r in records if r.method != "ft"]
    if not records:
        raise ValueError("similarity needs finished prompt runs (not ft)")
    cells, summary = [], []
    for r in records:
        sim = cosine_matrix(load_prompt(r))
        n = sim.shape[0]
        for i in range(n):
            for j in range(n):
                cells.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "i": i, "j": j,
                              "cosine": float(sim[i, j])})
        summary.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "num_tokens": n,
                        "mean_offdiag_cosine": mean_off_diagonal(sim), "min_cosine": float(sim.min())})
    return {"cells": cells, "runs": summary}


def draw_similarity(tables: dict):
    """Fig. 3: one heatmap per run (rows/cols = prompt tokens), the cosines written in when n <= 12."""
    import numpy as np

    runs, cells = tables["runs"], group_by(tables["cells"], lambda c: c["run"])
    cols = min(4, len(runs))
    rows_n = -(-len(runs) // cols)
    # Constrained layout, not tight_layout: the colorbar spans several axes.
    fig, axes = figure((3.3 * cols + 0.8, 3.2 * rows_n), rows_n, cols, layout="constrained")
    for k, run in enumerate(runs):
        n = run["num_tokens"]
        sim = np.zeros((n, n), dtype=np.float32)  # the float32 cosines the cells were read from
        for c in cells[run["run"]]:
            sim[c["i"], c["j"]] = c["cosine"]
        ax = axes[k // cols][k % cols]
        im = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{float(sim[i, j]):.1f}", ha="center", va="center", fontsize=5,
                            color="white" if abs(float(sim[i, j])) > 0.6 else "black")
        ax.set_title(f"{label(run)}\nmean off-diag {run['mean_offdiag_cosine']:.2f}", fontsize=8)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.tick_params(labelsize=6)
    for k in range(len(runs), rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6)
    return fig


def similarity(records: list[RunRecord], out: Path, **_) -> dict:
    tables = similarity_rows(records)
    save_figure(draw_similarity(tables), out / "similarity.png", tight=False)
    write_csv(out / "similarity.csv", tables["runs"])
    write_csv(out / "similarity_cells.csv", tables["cells"])
    write_json(out / "similarity.json", {"runs": tables["runs"]})
    return {"png": str(out / "similarity.png"), "csv": [str(out / "similarity.csv"), str(out / "similarity_cells.csv")]}


def nearest_tokens(prompt: torch.Tensor, table: torch.Tensor, tokenizer, top_k: int) -> list[list[tuple[str, float]]]:
    """For each row of P' (n, e): the top_k vocabulary tokens by cosine with the embedding table (V, e)."""
    unit_p = torch.nn.functional.normalize(prompt.float(), dim=-1)
    unit_t = torch.nn.functional.normalize(table.float(), dim=-1)
    cos = unit_p @ unit_t.T  # (n, V)
    values, ids = cos.topk(top_k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(vs, is_)] for vs, is_ in zip(values, ids)]


def neighbors_rows(records: list[RunRecord], top_k: int = 5) -> dict:
    """{"rows": the top_k vocabulary neighbours of each distinct prompt token per run (cosine,
    whether a label word), "runs": per run its tokens and how many have a label word among them}."""
    from ept.backbones import load_backbone

    records = [r for r in records if r.method != "ft"]
    if not records:
        raise ValueError("neighbors needs finished prompt runs (not ft)")
    cache: dict = {}
    rows, per_run = [], []
    for r in records:
        name = r.config["backbone"]
        if name not in cache:
            model, tok = load_backbone(name)
            cache[name] = (model.get_input_embeddings().weight.detach(), tok)
        table, tok = cache[name]
        prompt = load_prompt(r)
        distinct = prompt[:1] if prompt.shape[0] > 1 and torch.equal(prompt, prompt[:1].expand_as(prompt)) else prompt
        label_tokens = {t for w in r.spec.label_words for t in tok.tokenize(str(w))}
        lists = nearest_tokens(distinct, table, tok, top_k)
        for i, near in enumerate(lists):
            for rank, (token, cos) in enumerate(near, 1):
                rows.append({"run": r.name, "task": r.task, "method": r.method, "seed": r.seed, "token_index": i,
                             "rank": rank, "token": token, "cosine": cos, "is_label_word": token in label_tokens})
        per_run.append({"run": r.name, "tokens": [[t for t, _ in near] for near in lists],
                        "label_word_in_top_k": sum(any(t in label_tokens for t, _ in near) for near in lists),
                        "distinct_prompt_tokens": len(lists)})
    return {"rows": rows, "runs": per_run}


def draw_neighbors(tables: dict, top_k: int = 5):
    """Appendix A.1 as a table figure: the top-5 neighbours of each prompt token."""
    rows = tables["rows"]
    lines = [(r["run"], r["token_index"]) for r in rows if r["rank"] == 1]
    fig, ((ax,),) = figure((10, 0.3 * len(lines) + 1))
    ax.axis("off")
    cell_text = []
    for run, i in lines:
        toks = [f"{x['token']} ({x['cosine']:.2f})" for x in rows if x["run"] == run and x["token_index"] == i][:5]
        cell_text.append([run, str(i)] + toks + [""] * (5 - len(toks)))
    ax.table(cellText=cell_text, colLabels=["run", "P'_i"] + [f"#{k}" for k in range(1, 6)], loc="center", fontsize=6)
    ax.set_title(f"nearest vocabulary tokens (cosine) of each prompt token, top {min(5, top_k)}")
    return fig


def neighbors(records: list[RunRecord], out: Path, top_k: int = 5, **_) -> dict:
    """Appendix A.1: nearest vocabulary tokens of each distinct prompt token (cosine); a table
    figure of the top-5, all neighbours in CSV/JSON, and whether a label word is among them."""
    tables = neighbors_rows(records, top_k)
    png = save_figure(draw_neighbors(tables, top_k), out / "neighbors.png")
    write_csv(out / "neighbors.csv", tables["rows"])
    write_json(out / "neighbors.json", {"top_k": top_k, "runs": tables["runs"]})
    return {"png": str(png), "csv": str(out / "neighbors.csv"), "json": str(out / "neighbors.json")}
