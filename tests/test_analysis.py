"""`ept analyze`: every analysis on short real runs (tiny BERT backbone, real SST-2/CoLA rows).

Figures must be real PNGs that open; numbers in the CSVs must match the run folders.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ept.cli import main
from ept.method_configs import method_config
from ept.training.recipe import TrainConfig, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_bert, mini_data, tmp_path_factory):
    """13 short runs covering every analysis: 5 methods, 2 seeds of EPT, ablation, n, h, lr, init, 2 tasks."""
    root = tmp_path_factory.mktemp("runs")
    mini = mini_data
    base = dict(backbone=tiny_bert, steps=4, eval_every=2, batch_size=8, max_eval_examples=24, max_length=32,
                data_dir=str(mini), tensorboard=False)
    grid = [("sst2", m, {}, 0.3, 0) for m in ("pt", "ptuning", "resprompt", "ept", "ept_star")]
    grid += [("sst2", "ept", {}, 0.3, 1), ("sst2", "ept", {"layer_norm": True}, 0.3, 0),
             ("sst2", "ept", {"activation": "relu"}, 0.3, 0), ("sst2", "ept", {"num_tokens": 3}, 0.3, 0),
             ("sst2", "ept", {"hidden_size": 5}, 0.3, 0), ("sst2", "ept", {"init": "label"}, 0.3, 0),
             ("sst2", "pt", {}, 0.01, 0), ("sst2", "ept", {}, 0.01, 0), ("cola", "ept_star", {}, 0.3, 0)]
    for task, method, options, lr, seed in grid:
        name = f"{task}-{method}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'default'}-lr{lr}-s{seed}"
        results = run(TrainConfig(task=task, method=method_config(method, **options), lr=lr, seed=seed,
                                  out=str(root / "sweep" / name), **base), progress=False)
        assert results["status"] == "finished", results
    # a failed run must be skipped and reported, not analysed
    failed = root / "sweep" / "sst2-pt-failed-s9"
    shutil.copytree(root / "sweep" / "sst2-pt-default-lr0.3-s0", failed)
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    return root / "sweep"


def _png_ok(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, img.shape


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _test_score(folder: Path) -> float:
    r = _results(folder)
    return r["test"][r["main_metric"]]


def test_norms_match_steps_log(runs, tmp_path):
    assert main(["analyze", "norms", str(runs / "sst2-pt-default-lr0.3-s0"), str(runs / "sst2-ptuning-default-lr0.3-s0"),
                 "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "norms.png")
    rows = _csv(tmp_path / "norms.csv")
    logged = [json.loads(x) for x in (runs / "sst2-pt-default-lr0.3-s0" / "steps.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["run"] == "sst2-pt-default-lr0.3-s0"]
    assert [int(r["step"]) for r in mine] == [x["step"] for x in logged]
    assert [float(r["mu_t"]) for r in mine] == [x["mu_t"] for x in logged]
    evals = _csv(tmp_path / "norms_eval.csv")
    assert {int(r["step"]) for r in evals} == {2, 4}


def test_similarity_heatmap_and_mean_offdiag(runs, tmp_path):
    from ept.checkpoint import load_exported

    folders = [runs / "sst2-pt-default-lr0.3-s0", runs / "sst2-ept_star-default-lr0.3-s0"]
    assert main(["analyze", "similarity", *map(str, folders), "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "similarity.png")
    summary = {r["run"]: r for r in _csv(tmp_path / "similarity.csv")}
    # EPT* broadcasts one vector: every pair of tokens has cosine 1
    assert math.isclose(float(summary["sst2-ept_star-default-lr0.3-s0"]["mean_offdiag_cosine"]), 1.0, abs_tol=1e-5)
    prompt, _ = load_exported(folders[0] / "export")
    unit = torch.nn.functional.normalize(prompt, dim=-1)
    sim = unit @ unit.T
    expected = float((sim.sum() - sim.diagonal().sum()) / (10 * 9))
    assert math.isclose(float(summary["sst2-pt-default-lr0.3-s0"]["mean_offdiag_cosine"]), expected, rel_tol=1e-5)


def test_concat_full_length_reproduces_the_original(runs, tmp_path):
    folder = runs / "sst2-pt-default-lr0.3-s0"
    assert main(["analyze", "concat", str(folder), str(runs / "sst2-ept-default-lr0.3-s0"), "--out", str(tmp_path),
                 "--lengths", "1,2,10", "--split", "test"]) == 0
    _png_ok(tmp_path / "concat.png")
    rows = _csv(tmp_path / "concat.csv")
    assert sorted({int(r["length"]) for r in rows}) == [1, 2, 10]
    # the "original" line is the run's own best-state test score
    assert {float(r["original"]) for r in rows if r["run"] == folder.name} == {_test_score(folder)}
    # EPT (n=1): P_0 repeated once IS the trained prompt
    ept = [r for r in rows if r["method"] == "ept" and r["length"] == "1"]
    assert float(ept[0]["score"]) == float(ept[0]["original"])


@pytest.mark.parametrize("name,x_of", [
    ("hidden", lambda c: (c["method_options"].get("hidden_size", 1))),
    ("broadcast", lambda c: c["method_options"].get("num_tokens", 10 if c["method"] == "ept_star" else 1)),
    ("lr", lambda c: c["lr"]),
])
def test_sweep_curves_match_results(runs, tmp_path, name, x_of):
    assert main(["analyze", name, str(runs), "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / f"{name}.png")
    rows = _csv(tmp_path / f"{name}.csv")
    assert rows and "sst2-pt-failed-s9" not in {r["run"] for r in rows}
    for r in rows:
        folder = runs / r["run"]
        assert float(r["score"]) == _test_score(folder)
        assert float(r["x"]) == float(x_of(json.loads((folder / "config.json").read_text())))
    summary = _csv(tmp_path / f"{name}_summary.csv")
    if name == "hidden":  # h = 1 has two seeds of plain EPT: mean ± std over them
        h1 = next(s for s in summary if s["series"] == "ept (n=1)" and float(s["x"]) == 1)
        seeds = [_test_score(runs / f"sst2-ept-default-lr0.3-s{s}") for s in (0, 1)]
        assert int(h1["n_seeds"]) == 2 and math.isclose(float(h1["mean"]), sum(seeds) / 2)
    provenance = json.loads((tmp_path / f"{name}.provenance.json").read_text())
    assert any("sst2-pt-failed-s9" in s and "boom" in s for s in provenance["skipped"])


def test_ablation_bars_and_norms(runs, tmp_path):
    assert main(["analyze", "ablation", str(runs), "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "ablation.png")
    rows = {r["run"]: r for r in _csv(tmp_path / "ablation.csv")}
    assert {r["variant"] for r in rows.values()} == {"None", "+LayerNorm", "+RELU"}
    ln = runs / "sst2-ept-layer_norm=True-lr0.3-s0"
    assert float(rows[ln.name]["final_mu_t"]) == _results(ln)["final_mu_t"]
    assert float(rows[ln.name]["score"]) == _test_score(ln)


def test_init_table(runs, tmp_path):
    assert main(["analyze", "init", str(runs), "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "init.png")
    summary = {(r["task"], r["init"]): r for r in _csv(tmp_path / "init_summary.csv")}
    label = runs / "sst2-ept-init=label-lr0.3-s0"
    assert float(summary[("sst2", "label")]["mean"]) == _test_score(label)
    assert "| sst2 |" in (tmp_path / "init.md").read_text()


def test_neighbors(runs, tmp_path):
    folder = runs / "sst2-ept-init=label-lr0.3-s0"
    assert main(["analyze", "neighbors", str(folder), "--out", str(tmp_path), "--top-k", "3"]) == 0
    _png_ok(tmp_path / "neighbors.png")
    rows = _csv(tmp_path / "neighbors.csv")
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]  # EPT: one distinct vector
    cos = [float(r["cosine"]) for r in rows]
    assert cos == sorted(cos, reverse=True) and all(-1 <= c <= 1 for c in cos)


def test_transfer_matrix(runs, tmp_path):
    folders = [runs / "sst2-ept_star-default-lr0.3-s0", runs / "cola-ept_star-default-lr0.3-s0"]
    assert main(["analyze", "transfer", *map(str, folders), "--out", str(tmp_path), "--split", "test"]) == 0
    _png_ok(tmp_path / "transfer.png")
    data = json.loads((tmp_path / "transfer.json").read_text())
    assert data["tasks"] == ["sst2", "cola"] and data["normalize"] == "target"
    rows = {(r["source"], r["target"]): r for r in _csv(tmp_path / "transfer.csv")}
    own = {t: float(rows[(t, t)]["score"]) for t in data["tasks"]}
    if own["cola"]:  # sst2's prompt on cola, over cola's own prompt on cola
        assert math.isclose(data["ratio_to_target"][0][1], float(rows[("sst2", "cola")]["score"]) / own["cola"])
    for i, task in enumerate(data["tasks"]):  # a task's own prompt on itself: ratio 1, score = its test score
        assert math.isclose(data["ratio_to_target"][i][i], 1.0) or data["own_score"][task] == 0
        assert math.isclose(data["ratio_to_source"][i][i], 1.0) or data["own_score"][task] == 0
        assert data["own_score"][task] == _test_score(folders[i])
        assert math.isclose(data["cosine"][i][i], 1.0, rel_tol=1e-5)


def test_bad_input(runs, tmp_path, capsys):
    assert main(["analyze", "norm", str(runs), "--out", str(tmp_path)]) == 2
    assert "Did you mean: norms" in capsys.readouterr().err
    assert main(["analyze", "norms", str(runs), "--out", str(tmp_path), "--token", "3"]) == 2
    assert "takes no option(s) token" in capsys.readouterr().err
    assert main(["analyze", "norms", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- rows apart from drawing (issue 12)
def test_rows_are_computed_without_matplotlib(runs, monkeypatch):
    """Each analysis's tidy rows come from `*_rows` with matplotlib unimportable; only `draw_*` needs it."""
    import sys

    from ept.analysis import curves, geometry
    from ept.analysis.runs import load_records

    records, _ = load_records([str(runs)])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith(("matplotlib.", "mpl_toolkits"))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError

    norms = curves.norms_rows([r for r in records if r.name == "sst2-pt-default-lr0.3-s0"])
    logged = [json.loads(x) for x in (runs / "sst2-pt-default-lr0.3-s0" / "steps.jsonl").read_text().splitlines()]
    assert [(s["step"], s["mu_t"]) for s in norms["steps"]] == [(x["step"], x["mu_t"]) for x in logged]
    assert [e["step"] for e in norms["evals"]] == [2, 4] and norms["metrics"] == {"sst2": "accuracy"}

    hidden = curves.sweep_rows(curves._ept_only(records, "hidden_size"), "hidden",
                               lambda r: r.options["hidden_size"], "test", lambda r: f"{r.method} (n={r.options['num_tokens']})")
    h1 = next(g for g in hidden["groups"] if g["series"] == "ept (n=1)" and g["x"] == 1)
    seeds = [_test_score(runs / f"sst2-ept-default-lr0.3-s{s}") for s in (0, 1)]
    assert h1["n_seeds"] == 2 and math.isclose(h1["mean"], sum(seeds) / 2)

    ablation = curves.ablation_rows(records)
    assert ablation["variants"] == ["None", "+LayerNorm", "+RELU"]
    assert {g["variant"]: g["n_seeds"] for g in ablation["groups"]} == {"None": 2, "+LayerNorm": 1, "+RELU": 1}
    init = curves.init_rows(records)
    assert init["inits"] == ["uniform", "label"] and [t["task"] for t in init["table"]] == ["cola", "sst2"]
    assert init["table"][0]["label"] == "—"  # no label-init run on cola

    sim = geometry.similarity_rows([r for r in records if r.name == "sst2-ept_star-default-lr0.3-s0"])
    assert len(sim["cells"]) == 100 and math.isclose(sim["runs"][0]["mean_offdiag_cosine"], 1.0, abs_tol=1e-5)
    with pytest.raises(ImportError):
        curves.draw_ablation(ablation)  # drawing is the only step that needs matplotlib


_BACKEND = """
import sys, matplotlib
matplotlib.use("pdf")  # the user's choice, made before
from ept.analysis import run_analysis
run_analysis("hidden", [sys.argv[1]], sys.argv[2])
assert "matplotlib.pyplot" not in sys.modules, "an analysis imported pyplot"
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
"""


def test_analyses_leave_the_backend_alone(runs, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _BACKEND, str(runs), str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    _png_ok(tmp_path / "hidden.png")
