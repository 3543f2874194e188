"""The preregistered SmolLM2 analysis (experiments/smollm2_prereg/analyze.py), tested on synthetic
run folders before stage C's results exist: the statistics against scipy, the lr rule with its
tie-break, the decision rule at its boundaries, and a whole B -> C -> D -> E report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def analyze(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("prereg_analyze", ROOT / "experiments" / "smollm2_prereg" / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RES", tmp_path)
    monkeypatch.setattr(module, "DOC", tmp_path / "results-smollm2.md")  # never the real doc
    return module


def _run(res: Path, stage: str, name: str, method: str, seed: int, lr: float, validation: float,
         correct: np.ndarray | None = None, options: dict | None = None) -> None:
    """A finished run folder as `ept train` writes it (the files the analysis reads)."""
    folder = res / stage / name
    folder.mkdir(parents=True)
    cfg = {"method": method, "seed": seed, "lr": lr, "steps": 1000, **({"method_options": options} if options else {})}
    (folder / "config.json").write_text(json.dumps(cfg))
    test = None
    if correct is not None:
        labels = np.arange(len(correct)) % 2
        preds = np.where(correct == 1, labels, 1 - labels)
        (folder / "predictions-test.jsonl").write_text("".join(
            json.dumps({"row": i, "prediction": int(p), "label": int(y)}) + "\n" for i, (p, y) in enumerate(zip(preds, labels))))
        test = {"accuracy": round(100 * float(correct.mean()), 2)}
    (folder / "results.json").write_text(json.dumps({
        "status": "finished", "main_metric": "accuracy", "validation": {"accuracy": validation}, "test": test,
        "best_step": 200, "final_mu_t": 10.0}))


def test_welch_interval_is_scipys(analyze):
    a, b = np.array([88.1, 86.9, 90.2, 87.5, 89.0]), np.array([84.0, 88.8, 79.5, 86.1, 83.3])
    for level in (0.95, 0.90):
        d, lo, hi = analyze.welch(a, b, level)
        want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
        assert d == pytest.approx(a.mean() - b.mean())
        assert (lo, hi) == pytest.approx((want.low, want.high))


def test_bootstrap_is_seeded_and_centred(analyze):
    rng = np.random.default_rng(1)
    base = (rng.random((5, 872)) < 0.85).astype(float)
    lo, hi = analyze.bootstrap(base, base.copy())
    assert lo < 0 < hi and abs(lo + hi) < 0.5  # the same runs in both arms: seed resampling only, centred on 0
    worse = base.copy()
    worse[:, :87] = 0  # arm b loses ~10% of the rows in every seed
    d = 100 * (base.mean() - worse.mean())
    lo, hi = analyze.bootstrap(base, worse)
    assert 0 < lo < d < hi
    assert analyze.bootstrap(base, worse) == (lo, hi)  # seeded: the same interval every time


@pytest.mark.parametrize("lo95, hi90, want", [
    (0.1, 3.0, "beats"), (0.0, 1.9, "is not better than"), (-5.0, 1.99, "is not better than"),
    (-0.5, 2.0, "is inconclusive against"), (-3.0, 4.0, "is inconclusive against")])
def test_decision_rule_boundaries(analyze, lo95, hi90, want):
    assert analyze.verdict(lo95, hi90) == want


def test_lr_rule_takes_the_best_mean_and_breaks_ties_upwards(analyze, tmp_path):
    # pt: 0.03 best on the mean; ept: 0.03 and 0.3 tie -> 0.3 (the paper's side)
    val = {("pt", 0.003): (80, 82), ("pt", 0.03): (85, 86), ("pt", 0.3): (90, 70),
           ("ept", 0.003): (60, 61), ("ept", 0.03): (70, 72), ("ept", 0.3): (72, 70)}
    for (method, lr), scores in val.items():
        for seed, v in enumerate(scores):
            _run(tmp_path, "B", f"{method}-{lr}-s{seed}", method, seed, lr, v)
    report: list[str] = []
    decision = analyze.stage_b(report)
    assert decision["lr"] == {"pt": 0.03, "ept": 0.3} and decision["pt1_lr"] == 0.03
    assert json.loads((tmp_path / "B" / "decision.json").read_text())["lr"] == decision["lr"]
    # What C can resolve at B's spread: pooled seed variance per method, Welch half-widths for 5 seeds
    sens = analyze.sensitivity([{"method": m, "lr": lr, "validation": v} for (m, lr), vs in val.items() for v in vs], [])
    pooled = {m: np.mean([np.var(v, ddof=1) for (mm, _), v in val.items() if mm == m]) for m in ("pt", "ept")}
    se = np.sqrt((pooled["pt"] + pooled["ept"]) / 5)
    df = se ** 4 / ((pooled["pt"] / 5) ** 2 / 4 + (pooled["ept"] / 5) ** 2 / 4)
    assert sens["half_width95"] == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert sens["sd"]["pt"] == pytest.approx(np.sqrt(pooled["pt"]))
    assert "Design sensitivity" in "\n".join(report)
    # Fig. 8 from the same runs, by `ept analyze lr`'s code: the mean over the two seeds per (method, lr)
    import csv

    summary = list(csv.DictReader((tmp_path / "B" / "fig8-lr" / "lr_summary.csv").open()))
    assert {(r["series"], float(r["x"])): float(r["mean"]) for r in summary} == {k: sum(v) / 2 for k, v in val.items()}
    assert (tmp_path / "B" / "fig8-lr" / "lr.png").stat().st_size > 0


def test_an_unfinished_stage_draws_no_verdict_and_names_what_is_missing(analyze, tmp_path):
    rng = np.random.default_rng(0)
    for seed in (2, 3, 4, 5):  # one seed short in every arm
        for arm, (method, opts) in analyze.ARMS_C.items():
            _run(tmp_path, "C", f"{arm}-s{seed}", method, seed, 0.3, 80, (rng.random(872) < 0.8).astype(float), opts)
    report: list[str] = []
    assert analyze.stage_c(report) is None
    text = "\n".join(report)
    assert "12 of 15 runs finished (missing: PT seed 6, EPT seed 6, PT1 seed 6)" in text and "beats" not in text
    assert not (tmp_path / "B" / "decision.json").exists()
    report = []
    assert analyze.stage_b(report) is None and "0 of 12 runs finished" in "\n".join(report)


def test_a_whole_report_from_b_to_e(analyze, tmp_path):
    """C: EPT clearly above PT (verdict "beats"), PT1 equal to PT ("not better" at the 2-point margin);
    D is paired with C's same seeds; E's arms near the majority are declared uninformative."""
    rng = np.random.default_rng(0)
    truth = {"PT": 0.80, "EPT": 0.88, "PT1": 0.80}
    shared = rng.random(872)  # row difficulty shared by the arms, as real test rows are
    acc: dict[str, list[float]] = {}
    for arm, (method, opts) in analyze.ARMS_C.items():
        for seed in analyze.C_SEEDS:
            noise = rng.normal(0, 0.004)
            correct = (shared < truth[arm] + noise).astype(float)
            acc.setdefault(arm, []).append(100 * correct.mean())
            _run(tmp_path, "C", f"{arm}-s{seed}", method, seed, 0.3, 85, correct, opts)
    for arm, shift in (("PT", 0.0), ("EPT", -0.02)):
        method, opts = analyze.ARMS_C[arm]
        for seed in (2, 3):
            _run(tmp_path, "D", f"{arm}-sink-s{seed}", method, seed, 0.3, 85,
                 (shared < truth[arm] + shift).astype(float), opts)
    for arm in ("PT", "EPT"):
        for seed in (2, 3, 4):
            _run(tmp_path, "E", f"{arm}-s{seed}", arm.lower(), seed, 0.3, 55, (rng.random(139) < 0.55).astype(float))
    report: list[str] = []
    out = analyze.stage_c(report)
    assert out["EPT - PT"]["verdict"] == "beats"
    assert out["EPT - PT"]["difference"] == pytest.approx(np.mean(acc["EPT"]) - np.mean(acc["PT"]))  # unrounded
    lo, hi = out["EPT - PT"]["bootstrap95"]
    assert 0 < lo < out["EPT - PT"]["difference"] < hi
    assert out["PT1 - PT"]["verdict"] == "is not better than"
    d_line = analyze.paired_stage("D", "D", report, paired_with="C")
    e_line = analyze.paired_stage("E", "E", report, analyze.RTE_TEST_MAJORITY)
    text = "\n".join(report)
    d_rows = [line for line in text.splitlines() if line.startswith("| EPT-sink-s")]
    d_ept = 100 * (shared < truth["EPT"] - 0.02).mean()
    diffs = [round(d_ept, 2) - round(acc["EPT"][i], 2) for i in (0, 1)]
    want = [f"| {round(acc['EPT'][i], 2):.1f} | {diffs[i]:+.1f} |" for i in (0, 1)]
    assert [line[-len(w):] for line, w in zip(d_rows, want)] == want  # each against C's same seed (2, 3)
    assert "**uninformative** (preregistered rule)" in text
    # the one-line summaries the doc's opening carries under the verdict
    assert d_line.startswith("D (4 of 4 runs finished; described, not tested): test accuracy minus C's same arm and seed: ")
    assert f"EPT seed 2 {diffs[0]:+.1f}, EPT seed 3 {diffs[1]:+.1f}" in d_line
    assert e_line.startswith("E (6 of 6 runs finished): Majority class 54.7; arm means EPT ")
    assert e_line.endswith("**uninformative** (preregistered rule): no verdict.")
    assert analyze.paired_stage("D", "D", [], paired_with="B").endswith("same arm and seed: no pair finished.")


def test_files_that_disagree_stop_the_analysis(analyze, tmp_path):
    correct = np.ones(872)
    _run(tmp_path, "C", "bad", "pt", 2, 0.3, 80, correct)
    results = tmp_path / "C" / "bad" / "results.json"
    r = json.loads(results.read_text())
    r["test"]["accuracy"] = 90.0  # the predictions say 100
    results.write_text(json.dumps(r))
    with pytest.raises(ValueError, match="bad: predictions-test.jsonl gives accuracy 100.000 on 872 rows"):
        analyze.test_accuracy(analyze.runs("C")[0])


def test_stage_a_alone_leaves_the_whole_report(analyze, tmp_path):
    """`--stage A` (run_all.sh, at every start) writes A's decision and prints; it once replaced
    analysis.md with stage A alone, and the progress committer committed B's section's deletion."""
    (tmp_path / "A").mkdir()
    for template, acc in (("t5", 45.0), ("natural", 79.0)):
        metrics = {"true": {"accuracy": acc}, "false": {"accuracy": acc + 0.5}}
        (tmp_path / "A" / f"zeroshot-validation-{template}.json").write_text(
            json.dumps({"examples": 500, "label_score_eos": metrics}))
    _run(tmp_path, "B", "sst2-pt-lr=0.03-s0", "pt", 0, 0.03, 89.2)
    assert analyze.main([]) == 0
    whole = (tmp_path / "analysis.md").read_text()
    assert "## Stage B" in whole and "## Stage C" in whole
    (tmp_path / "A" / "decision.json").unlink()
    assert analyze.main(["--stage", "A"]) == 0
    assert json.loads((tmp_path / "A" / "decision.json").read_text())["template"] == "natural"
    assert (tmp_path / "analysis.md").read_text() == whole


def test_make_specs_writes_c_d_e_from_b_and_never_rewrites(tmp_path, monkeypatch):
    """The unattended step between B and C (run_all.sh): C, D and E at B's lrs, everything else as
    registered and copied from B's spec, each a valid sweep of the registered size; a spec that
    exists is left as it is."""
    from ept.sweep import load_spec

    spec = importlib.util.spec_from_file_location("prereg_specs", ROOT / "experiments" / "smollm2_prereg" / "make_specs.py")
    specs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(specs)
    here = tmp_path / "here"
    here.mkdir()
    (here / "B_lr_screen.yaml").write_text((ROOT / "experiments" / "smollm2_prereg" / "B_lr_screen.yaml").read_text())
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"lr": {"pt": 0.03, "ept": 0.3}}))
    monkeypatch.setattr(specs, "HERE", here)
    monkeypatch.setattr(specs, "ROOT", tmp_path)
    monkeypatch.setattr(specs, "DECISION", decision)
    assert specs.main() == 0
    b = load_spec(here / "B_lr_screen.yaml", out=tmp_path / "B", check_data=False)
    want = {"C_confirm": (15, "sst2", 1000), "D_sink": (4, "sst2", 1000), "E_rte": (6, "rte", 400)}
    for name, (count, task, steps) in want.items():
        sweep = load_spec(here / f"{name}.yaml", out=tmp_path / name, check_data=False)
        assert len(sweep.runs) == count, name
        for run in sweep.runs:
            cfg = run.config
            assert (cfg["task"], cfg["steps"]) == (task, steps)
            assert cfg["lr"] == {"pt": 0.03, "ept": 0.3}[cfg["method"]]  # PT1 takes PT's lr
            for key in specs.SHARED:
                assert cfg[key] == b.runs[0].config[key], (name, key)
            assert cfg["seed"] in ((2, 3, 4, 5, 6) if name == "C_confirm" else (2, 3) if name == "D_sink" else (2, 3, 4))
            assert cfg.get("sink_token") == ("<|endoftext|>" if name == "D_sink" else None)
    c = load_spec(here / "C_confirm.yaml", out=tmp_path / "C", check_data=False)
    assert sum((run.config.get("method_options") or {}).get("num_tokens") == 1 for run in c.runs) == 5
    arms = [(r.config["seed"], r.config["method"], (r.config.get("method_options") or {}).get("num_tokens")) for r in c.runs]
    assert arms[:6] == [(2, "pt", None), (2, "ept", None), (2, "pt", 1), (3, "pt", None), (3, "ept", None), (3, "pt", 1)]
    assert len({r.name for r in c.runs}) == 15  # seed by seed, every arm: a stage cut short is balanced
    decision.write_text(json.dumps({"lr": {"pt": 0.3, "ept": 0.003}}))  # a later decision changes nothing
    before = {p.name: p.read_text() for p in here.glob("*.yaml")}
    assert specs.main() == 0
    assert {p.name: p.read_text() for p in here.glob("*.yaml")} == before


def test_commit_progress_commits_results_and_new_specs_never_a_mixed_checkpoint(tmp_path, monkeypatch):
    """The committer while the experiment runs: it commits the results folder and the C/D/E specs
    (they must land with or before their first results), nothing else of the tree, and never a
    checkpoint whose files are not the ones its last/state.json was written with."""
    import subprocess

    from ept.atomic_io import file_digest

    spec = importlib.util.spec_from_file_location("prereg_commit", ROOT / "experiments" / "smollm2_prereg" / "commit_progress.py")
    committer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(committer)
    monkeypatch.setattr(committer, "ROOT", tmp_path)

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "README").write_text("x")
    git("add", "README")
    git("commit", "-q", "-m", "start")
    run = tmp_path / committer.RESULTS / "C" / "sst2-ept-s2"
    (run / "last").mkdir(parents=True)
    (run / "last" / "method.safetensors").write_bytes(b"weights at step 50")
    (run / "last" / "state.json").write_text(json.dumps(
        {"step": 50, "files": {"last/method.safetensors": file_digest(run / "last" / "method.safetensors")}}))
    (tmp_path / "experiments" / "smollm2_prereg").mkdir(parents=True)
    (tmp_path / "experiments" / "smollm2_prereg" / "C_confirm.yaml").write_text("name: C\n")
    (tmp_path / "experiments" / "smollm2_prereg" / "analyze.py").write_text("# being edited\n")
    assert committer.commit_once()
    committed = set(git("show", "--name-only", "--format=", "HEAD").split())
    assert committed == {f"{committer.RESULTS}/C/sst2-ept-s2/last/method.safetensors",
                         f"{committer.RESULTS}/C/sst2-ept-s2/last/state.json",
                         "experiments/smollm2_prereg/C_confirm.yaml"}
    assert "sst2-ept-s2: step 50" in git("log", "-1", "--format=%B")
    assert not committer.commit_once()  # nothing new

    # The weights of the next step written, its state.json not yet: not committed, nothing left staged.
    (run / "last" / "method.safetensors").write_bytes(b"weights at step 100")
    assert not committer.commit_once()
    assert git("diff", "--cached", "--name-only") == ""
    assert git("rev-list", "--count", "HEAD").strip() == "2"


def test_the_doc_opens_with_the_status_then_the_verdict_regenerated(analyze, tmp_path):
    """docs/results-smollm2.md's opening, between its markers, is written by the analysis: the
    progress of every stage (a run in progress with its checkpoint step) and no verdict while C is
    short of a run; the verdict with its intervals, the controls and the arms once C is whole. The
    prose around it is kept byte for byte."""
    doc = tmp_path / "results-smollm2.md"
    doc.write_text(f"# Title\n\n{analyze.BEGIN}\nstale\n{analyze.END}\n\nProse that stays.\n")
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "decision.json").write_text(json.dumps({"lr": {"pt": 0.3, "ept": 0.03}, "detail": {
        "pt": {"lr": 0.3, "mean_validation": {"0.003": 88.0, "0.03": 90.2, "0.3": 91.0}},
        "ept": {"lr": 0.03, "mean_validation": {"0.003": 80.0, "0.03": 85.5, "0.3": 84.0}}}}))
    rng = np.random.default_rng(1)
    shared = rng.random(872)
    truth = {"PT": 0.84, "EPT": 0.83, "PT1": 0.60}
    for arm, (method, opts) in analyze.ARMS_C.items():
        for seed in analyze.C_SEEDS[:-1]:
            _run(tmp_path, "C", f"{arm}-s{seed}", method, seed, 0.3, 85, (shared < truth[arm] + rng.normal(0, 0.005)).astype(float), opts)
    last = tmp_path / "C" / "EPT-s6" / "last"
    last.mkdir(parents=True)
    (last.parent / "config.json").write_text(json.dumps({"method": "ept", "seed": 6, "lr": 0.03}))
    (last / "state.json").write_text(json.dumps({"step": 350}))
    assert analyze.main([]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Title\n\n{analyze.BEGIN}\n## Status") and text.endswith(f"{analyze.END}\n\nProse that stays.\n")
    assert "**No verdict yet**: stage C has 12 of 15 runs finished." in text and "stale" not in text
    assert "| C | confirmation: PT, EPT, PT1 x seeds 2-6 at B's lrs, 1,000 steps, 872 test rows | 12 of 15 | EPT-s6 at step 350 |" in text
    assert "beats" not in text and "is not better than" not in text
    assert ("Stage B chose lr **0.3 for PT** (and PT1) and **0.03 for EPT**: the best mean best-checkpoint validation "
            "accuracy over seeds 0-1 (PT 0.003: 88.0, 0.03: 90.2, 0.3: 91.0; EPT 0.003: 80.0, 0.03: 85.5, 0.3: 84.0;") in text

    import shutil

    shutil.rmtree(last.parent)
    for arm, (method, opts) in analyze.ARMS_C.items():
        _run(tmp_path, "C", f"{arm}-s6", method, 6, 0.3, 85, (shared < truth[arm]).astype(float), opts)
    assert analyze.main([]) == 0
    text = doc.read_text()
    out = analyze.stage_c([])
    m = out["EPT - PT"]
    assert m["verdict"] == "is not better than"  # EPT one point below PT: inside the 2-point margin
    opening = text[text.index(analyze.BEGIN):text.index(analyze.END)]
    assert opening.splitlines()[1] == "## Verdict (preregistered; stage C)"
    assert "**EPT is not better than PT** on SST-2 test accuracy" in opening
    assert f"PT 0.3, EPT 0.03): EPT − PT = **{m['difference']:+.2f}** points, Welch 95% [{m['welch95'][0]:+.2f}, " in opening
    assert f"Welch 90% upper bound {m['welch90'][1]:+.2f}" in opening
    assert "Control: **EPT beats PT1**" in opening and "Control: **PT1 is not better than PT**" in opening
    pt1 = out["arms"]["PT1"]
    assert f"PT1 {np.mean(pt1):.1f} ± {np.std(pt1, ddof=1):.1f} (0 of 5 failed)" in opening
    # the arms' final prompt norms, described beside the verdict (the synthetic runs end at mu_t 10)
    assert "- Prompt norm after the last step (μ_t, median over seeds; described): PT 10, EPT 10, PT1 10.\n" in opening
    table = (tmp_path / "analysis.md").read_text()
    assert table.split("| PT1 | 5 | ")[1].split("\n")[0].endswith("| 0 of 5 | 10 |")
    assert "| C | confirmation" in opening and "15 of 15 | – |" in opening
    import csv

    drawn = list(csv.DictReader((tmp_path / "C" / "endpoint.csv").open()))  # the figure's numbers are the endpoint's
    assert {arm: [float(r["test_accuracy"]) for r in drawn if r["arm"] == arm] for arm in analyze.ARMS_C} == out["arms"]
    assert (tmp_path / "C" / "endpoint.png").stat().st_size > 0
    assert text.endswith(f"{analyze.END}\n\nProse that stays.\n")
    assert "Checked outside ept" not in opening
    assert "- Stage D" not in opening  # D and E add their lines once a run of theirs finished

    for arm in ("PT", "EPT"):  # one finished D run: its line joins the verdict's list
        method, opts = analyze.ARMS_C[arm]
        _run(tmp_path, "D", f"{arm}-sink-s2", method, 2, 0.3, 85, (shared < truth[arm]).astype(float), opts)
    assert analyze.main([]) == 0
    opening = doc.read_text()[:doc.read_text().index(analyze.END)]
    assert "(`results/smollm2-prereg/analysis.md`).\n- Stage D: sink" in opening  # D joins the verdict's list
    k = analyze.stage_c([])["kappa"]
    assert (f"between seeds of one arm PT {k['PT~PT']:.2f}, EPT {k['EPT~EPT']:.2f}, PT1 {k['PT1~PT1']:.2f}; between arms "
            f"PT~EPT {k['PT~EPT']:.2f}, PT~PT1 {k['PT~PT1']:.2f}, EPT~PT1 {k['EPT~PT1']:.2f}") in opening
    c_s2 = {r["name"]: analyze.main_score(r, "test") for r in analyze.runs("C") if r["name"] in ("PT-s2", "EPT-s2")}
    d_s2 = {r["name"]: analyze.main_score(r, "test") for r in analyze.runs("D")}
    pt, ept = (d_s2[f"{a}-sink-s2"] - c_s2[f"{a}-s2"] for a in ("PT", "EPT"))
    assert ("- Stage D: sink token before P' (seeds 2-3) (2 of 4 runs finished; described, not tested): test accuracy "
            f"minus C's same arm and seed: EPT seed 2 {ept:+.1f}, PT seed 2 {pt:+.1f}.\n\n") in opening
    shutil.rmtree(tmp_path / "D")

    # lm-evaluation-harness's check of the C runs (run_all.sh, after E): one line in the verdict
    names = [f"{arm}-s{seed}" for arm in analyze.ARMS_C for seed in analyze.C_SEEDS]
    checks = [{"run": name, "rows": 872, "recorded_accuracy": 85.0, "lm_eval_accuracy": 85.0 + 0.11 * (name == "PT-s2"),
               "lm_eval_differs_from_recorded": int(name == "PT-s2")} for name in names[:-1]]
    (tmp_path / "C" / "lm-eval").mkdir()
    (tmp_path / "C" / "lm-eval" / "lm-eval-sst2.json").write_text(json.dumps({"runs": checks + [{"run": "elsewhere", "rows": 9}]}))
    assert analyze.main([]) == 0
    opening = doc.read_text()[:doc.read_text().index(analyze.END)]
    assert ("- Checked outside ept: lm-evaluation-harness, loading each run's exported PEFT adapter, scores 14 of the 15 "
            "finished C runs on all their test rows; its predictions differ from the runs' recorded ones in 1 of 12,208 rows "
            "(largest accuracy difference 0.11 points;") in opening
    assert "Checked outside ept" in (tmp_path / "analysis.md").read_text()


def test_the_time_left_counts_the_committed_specs_runs_at_the_finished_runs_pace(analyze, tmp_path):
    """The status's forecast: the runs C/D/E's committed specs list, each from its checkpoint, at the
    median seconds a step of B's and C's finished runs (`ept.sweep.pace`, also `ept sweep --dry-run`)."""
    c_runs = analyze.spec_runs("C")
    assert len(c_runs) == 15 and all(str(r.config["out"]).startswith(str(tmp_path / "C")) for r in c_runs)
    for i, run in enumerate(c_runs[:3]):
        folder = Path(run.config["out"])
        (folder / "last").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(run.config))
        if i < 2:  # finished: 2.0 and 3.0 s a step over their last segments
            (folder / "results.json").write_text(json.dumps({"status": "finished", "wall_seconds": (2000.0, 1500.0)[i]}))
            (folder / "env.json").write_text(json.dumps({"from_step": (0, 500)[i]}))
        else:
            (folder / "last" / "state.json").write_text(json.dumps({"step": 350}))
    line = analyze.time_left_line()[0]
    left = 15_000 - 2_000 - 350 + 4_000 + 2_400
    assert line.startswith(f"Left: {left:,} training steps (C 12,650, D 4,000, E 2,400).")
    assert "median 2.5 s a step (2 runs, 2 at a time" in line
    assert f"about **{left * 2.5 / 2 / 3600:.0f} h** of wall time remain (D, E at SST-2's pace; RTE's longer" in line

    # once E has a finished run, E's steps go at E's own pace (10 s a step here)
    e_run = analyze.spec_runs("E")[0]
    folder = Path(e_run.config["out"])
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(e_run.config))
    (folder / "results.json").write_text(json.dumps({"status": "finished", "wall_seconds": 4000.0}))
    (folder / "env.json").write_text(json.dumps({"from_step": 0}))
    line = analyze.time_left_line()[0]
    hours = ((12_650 + 4_000) * 2.5 + 2_000 * 10.0) / 2 / 3600
    assert "; E's 1 finished runs 10.0 s" in line and f"about **{hours:.0f} h** of wall time remain (D at SST-2's pace)." in line


def test_a_run_that_failed_is_named_as_failed_in_the_status(analyze, tmp_path):
    """`ept sweep` does not retry a failed run by itself: the status must say it failed and how to
    retry, not show it as a run in progress."""
    folder = tmp_path / "C" / "EPT-s4"
    (folder / "last").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"method": "ept", "seed": 4, "lr": 0.03}))
    (folder / "last" / "state.json").write_text(json.dumps({"step": 150}))
    (folder / "results.json").write_text(json.dumps({"status": "failed", "error": "MemoryError: out of memory"}))
    assert analyze.progress("C") == (0, ["EPT-s4 at step 150 **FAILED** (MemoryError: out of memory; see its "
                                         "error.txt, then `ept sweep SPEC --retry-failed`)"])
    (folder / "results.json").write_text('{"status": "fin')  # torn: failed, and the status says why
    assert analyze.progress("C")[1][0].startswith("EPT-s4 at step 150 **FAILED** (its results.json is unreadable;")
    (folder / "results.json").unlink()
    assert analyze.progress("C") == (0, ["EPT-s4 at step 150"])


def test_runs_whose_best_checkpoint_is_the_last_are_counted_per_arm(analyze, tmp_path):
    for name, method, lr, best in (("a", "ept", 0.03, 1000), ("b", "ept", 0.03, 600), ("c", "pt", 0.3, 1000)):
        _run(tmp_path, "C", name, method, 2, lr, 85)
        results = tmp_path / "C" / name / "results.json"
        results.write_text(json.dumps({**json.loads(results.read_text()), "best_step": best}))
    assert analyze.at_last_evaluation([r for r in analyze.runs("C") if r["results"]])[0] == (
        "Best checkpoint at the last evaluation (validation highest at the end of the budget): 2 of 3 finished runs "
        "(EPT lr 0.03: 1 of 2; PT lr 0.3: 1 of 1).")


def test_row_agreement_is_chance_corrected_kappa_over_run_pairs(analyze, tmp_path):
    """EPT and PT1 get exactly the same rows right (kappa 1 across arms and seeds); PT's runs are
    independent coin flips at a higher accuracy, so their kappa with anything is near 0 even though
    raw agreement with EPT would be well above 50%."""
    rng = np.random.default_rng(1)
    same = (rng.random(872) < 0.84).astype(float)
    arms: dict[str, list] = {}
    for arm, (method, opts) in analyze.ARMS_C.items():
        for seed in (2, 3, 4):
            correct = (rng.random(872) < 0.88).astype(float) if arm == "PT" else same
            _run(tmp_path, "C", f"{arm}-s{seed}", method, seed, 0.3, 85, correct, opts)
    for r in analyze.runs("C"):
        arms.setdefault(analyze.arm_of(r), []).append(r)
    report: list[str] = []
    kappa = analyze.row_agreement(arms, report)
    assert kappa["EPT~PT1"] == pytest.approx(1.0) and kappa["EPT~EPT"] == pytest.approx(1.0)
    assert abs(kappa["PT~PT"]) < 0.1 and abs(kappa["PT~EPT"]) < 0.1
    from sklearn.metrics import cohen_kappa_score
    pt = [analyze.correctness(r) for r in arms["PT"]]  # 3 seeds: 3 distinct pairs, each once
    want = np.mean([cohen_kappa_score(pt[i], pt[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
    assert kappa["PT~PT"] == pytest.approx(want)
    assert "| EPT | " in "\n".join(report) and "Exploratory (not preregistered)" in report[0]


@pytest.mark.parametrize("task, constant", [("sst2", "SST2_TEST_MAJORITY"), ("rte", "RTE_TEST_MAJORITY")])
def test_the_majority_class_rates_are_the_real_test_splits(analyze, data_dir, task, constant):
    """The failure and informative rules compare runs with the majority class of the test rows the
    runs score; the analysis states that rate as a count. Check it against the split `ept train` makes."""
    from ept.tasks.loaders import label_distribution, load_task

    data = load_task(task, data_dir, source="local", template="natural")
    counts = label_distribution(data.spec, data.test)
    assert getattr(analyze, constant) == pytest.approx(100 * max(counts.values()) / sum(counts.values()))


def test_a_partial_stage_e_makes_no_informative_call(analyze, tmp_path):
    """E's rule (informative unless both arms end within 3 points of the majority) is a call on the
    whole stage: with 2 of 6 runs it names the means so far and draws nothing."""
    _run(tmp_path, "E", "EPT-s2", "ept", 2, 0.03, 51, (np.arange(139) % 10 < 6).astype(float))   # 60.4: far from 54.7
    _run(tmp_path, "E", "PT-s2", "pt", 2, 0.3, 59, (np.arange(139) % 10 < 5).astype(float))      # 50.4
    line = analyze.paired_stage("E", "E", [], analyze.RTE_TEST_MAJORITY)
    assert line.startswith("E (2 of 6 runs finished): Majority class 54.7; arm means so far EPT 60.4, PT 50.4")
    assert line.endswith("call waits for all 6 runs.")
    assert "informative." not in line and "EPT - PT" not in line


def test_a_whole_stage_e_away_from_the_majority_is_informative(analyze, tmp_path):
    """With all 6 runs, one arm's mean more than 3 points from the majority makes E informative, and
    the line gives EPT - PT as a description (E is not a tested endpoint)."""
    for seed in (2, 3, 4):  # EPT 60.4 (5.7 above 54.7), PT 50.4 (4.3 below): both away from it
        _run(tmp_path, "E", f"EPT-s{seed}", "ept", seed, 0.03, 51, (np.arange(139) % 10 < 6).astype(float))
        _run(tmp_path, "E", f"PT-s{seed}", "pt", seed, 0.3, 59, (np.arange(139) % 10 < 5).astype(float))
    line = analyze.paired_stage("E", "E", [], analyze.RTE_TEST_MAJORITY)
    assert line == ("E (6 of 6 runs finished): Majority class 54.7; arm means EPT 60.4, PT 50.4: informative. "
                    "EPT - PT +10.1 (described, not tested).")
