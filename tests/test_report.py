"""`ept report`: paper Table 1 layout from short real runs; mean ± std, bold/underline, "—",
few-shot Table 3, and the refusal to average runs that differ in more than the seed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ept.cli import main
from ept.train import TrainConfig, run


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sweep(tiny_bert, mini_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    mini = mini_data
    base = dict(backbone=tiny_bert, steps=4, eval_every=2, batch_size=8, max_eval_examples=24, max_length=32,
                data_dir=str(mini), tensorboard=False)
    for task, method, seed, few in [("sst2", "pt", 0, None), ("sst2", "pt", 1, None), ("sst2", "ept", 0, None),
                                    ("sst2", "ept", 1, None), ("sst2", "ept_star", 0, None), ("cola", "ept", 0, None),
                                    ("sst2", "ept", 0, 4), ("sst2", "pt", 0, 4)]:
        out = root / "runs" / f"{task}-{method}-k{few}-s{seed}"
        assert run(TrainConfig(task=task, method=method, seed=seed, few_shot=few, out=str(out), **base),
                   progress=False)["status"] == "finished"
    other = root / "other" / "sst2-pt-steps6-s2"  # same cell as sst2/pt, another step count
    assert run(TrainConfig(task="sst2", method="pt", seed=2, out=str(other), **{**base, "steps": 6}),
               progress=False)["status"] == "finished"
    return root


def _score(folder: Path) -> float:
    r = json.loads((folder / "results.json").read_text())
    return r["test"][r["main_metric"]]


def _row(md: str, method: str) -> list[str]:
    line = next(x for x in md.splitlines() if re.match(rf"\|[^|]*\| {re.escape(method)} \|", x))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table1_layout_and_numbers(sweep, tmp_path):
    runs = sweep / "runs"
    assert main(["report", str(runs), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "table1.md").read_text()
    header = next(x for x in md.splitlines() if "CoLA (Matt)" in x)
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[3:] == ["CoLA (Matt)", "MRPC (Acc)", "RTE (Acc)", "STS-B (Pearson)", "MNLI (Acc)", "QNLI (Acc)",
                        "QQP (Acc)", "SST-2 (Acc)", "Avg", "Boolq (Acc)", "CB (F1/Acc)", "WiC (Acc)", "WSC (Acc)",
                        "Multi (F1)", "Avg"]
    sst2 = cols.index("SST-2 (Acc)")
    pt, ept = _row(md, "PT"), _row(md, "EPT")
    assert pt[2] == "320" and ept[2] == "96"  # Param/task: n*e = 10*32; EPT e + 2e = 96
    # mean ± std over the two seeds, as the runs say
    import statistics

    for row, method in ((pt, "pt"), (ept, "ept")):
        scores = [_score(runs / f"sst2-{method}-kNone-s{s}") for s in (0, 1)]
        expected = f"{statistics.fmean(scores):.1f} ± {statistics.stdev(scores):.1f}"
        assert expected in row[sst2], (row[sst2], expected)
    # best bold, second underlined among the three methods on SST-2
    means = {"PT": statistics.fmean(_score(runs / f"sst2-pt-kNone-s{s}") for s in (0, 1)),
             "EPT": statistics.fmean(_score(runs / f"sst2-ept-kNone-s{s}") for s in (0, 1)),
             "EPT*": _score(runs / "sst2-ept_star-kNone-s0")}
    ranked = sorted({round(v, 1) for v in means.values()}, reverse=True)
    for method, value in means.items():
        cell = _row(md, method)[sst2]
        if round(value, 1) == ranked[0]:
            assert cell.startswith("**"), cell
        elif len(ranked) > 1 and round(value, 1) == ranked[1]:
            assert cell.startswith("<ins>"), cell
    # missing tasks: "—" with one footnote that says why
    notes = dict(re.findall(r"^- (\w): (.*)$", md, flags=re.M))
    mrpc = _row(md, "PT")[cols.index("MRPC (Acc)")]
    assert mrpc.startswith("—<sup>") and notes[mrpc[6]].startswith("no finished run for this task")
    cola = _row(md, "PT")[cols.index("CoLA (Matt)")]  # CoLA has an EPT run, not a PT one
    assert cola.startswith("—<sup>") and notes[cola[6]].startswith("no finished run of this method on this task")
    star = _row(md, "EPT*")[sst2]  # one seed: no ± std, and a footnote says so
    assert "±" not in star and notes[star.split("<sup>")[1][0]] == "one seed only (no std)"
    # CoLA has only EPT: PT's CoLA cell is empty, EPT's holds the run's MCC
    assert f"{_score(runs / 'cola-ept-kNone-s0'):.1f}" in ept[cols.index("CoLA (Matt)")]
    tex = (tmp_path / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\textbf{" in tex and "\\multicolumn{9}{c}{GLUE}" in tex
    report = (tmp_path / "report.md").read_text()
    assert "Runs behind the numbers" in report and "| sst2 | — | 4 | 8 |" in report


def test_fewshot_table3(sweep, tmp_path):
    assert main(["report", str(sweep / "runs"), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "table3.md").read_text()
    line = next(x for x in md.splitlines() if "| 4 |" in x)
    assert f"{_score(sweep / 'runs' / 'sst2-ept-k4-s0'):.1f}" in line
    assert (tmp_path / "table3.tex").read_text().startswith("\\begin{table}")


def test_mixed_step_counts_are_not_averaged(sweep, tmp_path, capsys):
    assert main(["report", str(sweep / "runs"), str(sweep / "other"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "differ in more than the seed" in err and "steps" in err
    md = (tmp_path / "table1.md").read_text()
    assert "mixed<sup>" in md and "steps: 4, 6" in md


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err
