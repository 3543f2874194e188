"""Task files (issue 20): a task as data, read into the same TaskSpec the built-ins use, and
accepted everywhere a task name goes; one validation path with errors that name the file/key."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

from ept.cli import main
from ept.tasks import load_task
from ept.tasks.spec import DataError, RowError
from ept.tasks.taskfile import TaskFileError, read_task_file

pytestmark = pytest.mark.usefixtures("one_thread")

URGENT = ["Server is down", "Cannot log in at all", "Payment outage", "Data lost after the update"]
ROUTINE = ["Please send the invoice", "How do I change my avatar", "Dark mode, maybe?", "Update my address"]
TICKETS = {
    "name": "tickets",
    "fields": ["subject", "body"],
    "template": "tickets subject: {subject} body: {body}",
    "label": {"column": "priority", "words": {"urgent": "urgent", "routine": "routine"}},
    "data": {"train": "train.csv", "eval": "test.csv"},
}


def _rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        urgent = i % 3 != 0
        rows.append({"subject": (URGENT if urgent else ROUTINE)[i % 4],
                     "body": f"ticket {i}: " + ("we are losing money, help" if urgent else "no rush at all"),
                     "priority": "urgent" if urgent else "routine"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_task(folder: Path, content: dict = TICKETS, name: str = "tickets.yaml", n_train: int = 40,
               n_test: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "train.csv", _rows(n_train))
    write_csv(folder / "test.csv", _rows(n_test, 1000))
    path = folder / name
    path.write_text(json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content, sort_keys=False))
    return path


# ---------------------------------------------------------------------- reading
def test_csv_task_file_is_a_taskspec_with_the_protocol_split(tmp_path):
    path = write_task(tmp_path)
    spec = read_task_file(path).spec
    assert (spec.name, spec.kind, spec.fields, spec.label_words) == ("tickets", "classification",
                                                                      ("subject", "body"), ("urgent", "routine"))
    data = load_task(spec)  # a TaskSpec goes where a task name goes
    # train 40 < 10K rows: the evaluation file (12) is halved into validation / test (B.1), seeded
    assert data.sizes() == {"train": 40, "validation": 6, "test": 6}
    ex = data.train[0]
    assert ex.source == f"tickets subject: {_rows(1)[0]['subject']} body: ticket 0: no rush at all"
    assert (ex.target, ex.label, ex.fields) == ("routine", 1, (_rows(1)[0]["subject"], "ticket 0: no rush at all"))
    assert load_task(spec, seed=42).test == data.test and load_task(spec, seed=1).test != data.test


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet", "csv.gz"])
def test_every_format_reads_the_same_rows(tmp_path, fmt):
    """CSV, TSV, JSONL, Parquet and gzip go through `datasets`' loaders to the same examples."""
    import pandas as pd

    csv_spec = read_task_file(write_task(tmp_path / "csv")).spec
    folder = tmp_path / fmt
    folder.mkdir()
    for name, rows in (("train", _rows(40)), ("test", _rows(12, 1000))):
        frame = pd.DataFrame(rows)
        target = folder / f"{name}.{fmt}"
        if fmt == "tsv":
            frame.to_csv(target, sep="\t", index=False)
        elif fmt == "jsonl":
            frame.to_json(target, orient="records", lines=True)
        elif fmt == "parquet":
            frame.to_parquet(target)
        else:
            with gzip.open(target, "wt", newline="") as f:
                frame.to_csv(f, index=False)
    content = {**TICKETS, "data": {"train": f"train.{fmt}", "eval": f"test.{fmt}"}}
    (folder / "t.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    a, b = load_task(csv_spec), load_task(read_task_file(folder / "t.yaml").spec)
    assert (a.train, a.validation, a.test) == (b.train, b.validation, b.test)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_csv_cells_are_read_as_written(tmp_path, fmt):
    """A csv/tsv cell is text: "007", "1.50", "NA", "1e5", "true" and "-0" reach the template unchanged (pandas
    alone would read 7, 1.5, NaN and 100000.0), while a numeric label column still maps to words."""
    cells = ["007", "1.50", "NA", "1e5", "true", "-0"]
    sep = "\t" if fmt == "tsv" else ","
    lines = [sep.join(["text", "label"])] + [sep.join([c, str(i % 2)]) for i, c in enumerate(cells)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.{fmt}").write_text("\n".join(lines) + "\n")
    content = {"name": "codes", "fields": ["text"], "template": "code: {text}",
               "label": {"column": "label", "words": {0: "no", 1: "yes"}},
               "data": {"train": f"train.{fmt}", "validation": f"test.{fmt}", "test": f"test.{fmt}"}}
    (tmp_path / "codes.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    data = load_task(read_task_file(tmp_path / "codes.yaml").spec)
    assert [ex.fields[0] for ex in data.test] == cells
    assert [ex.source for ex in data.test][:2] == ["code: 007", "code: 1.50"]
    assert [ex.target for ex in data.test] == ["no", "yes"] * 3


def test_given_splits_and_split_sizes(tmp_path):
    path = write_task(tmp_path)
    write_csv(tmp_path / "dev.csv", _rows(5, 500))
    given = {**TICKETS, "data": {"train": "train.csv", "validation": "dev.csv", "test": "test.csv"}}
    (tmp_path / "given.json").write_text(json.dumps(given))
    data = load_task(read_task_file(tmp_path / "given.json").spec)  # JSON too; files used as they are
    assert data.sizes() == {"train": 40, "validation": 5, "test": 12}
    assert [ex.fields[1][:11] for ex in data.test[:2]] == ["ticket 1000", "ticket 1001"]  # in file order
    sized = {**TICKETS, "data": {"train": "train.csv"}, "split": {"validation": 8, "test": 4}}
    (tmp_path / "sized.yaml").write_text(yaml.safe_dump(sized, sort_keys=False))
    data = load_task(read_task_file(tmp_path / "sized.yaml").spec)
    assert data.sizes() == {"train": 28, "validation": 8, "test": 4}
    only = {**TICKETS, "data": {"train": "train.csv"}}  # the protocol with no evaluation file: carved from train
    (tmp_path / "only.yaml").write_text(yaml.safe_dump(only, sort_keys=False))
    assert load_task(read_task_file(tmp_path / "only.yaml").spec).sizes() == {"train": 32, "validation": 4, "test": 4}
    from ept.tasks.check import check_task

    # `ept data check`: such a file is whole (not "partial", the word for a built-in missing official rows)
    check = check_task(read_task_file(tmp_path / "only.yaml").spec, None)
    assert (check.status, check.notes) == ("complete", ["no evaluation file: validation and test are carved from train"])
    assert path.exists()


def test_regression_and_generation_task_files(tmp_path):
    write_csv(tmp_path / "r.csv", [{"a": f"text {i}", "score": i % 6 * 0.9} for i in range(30)])
    reg = {"name": "sim", "kind": "regression", "fields": ["a"], "template": "sim a: {a}",
           "label": {"column": "score", "range": [0, 5]}, "data": {"train": "r.csv"},
           "split": {"validation": 5, "test": 5}}
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(reg))
    spec = read_task_file(tmp_path / "reg.yaml").spec
    assert spec.label_words[0] == "0.0" and spec.label_words[-1] == "5.0" and len(spec.label_words) == 26
    assert spec.metrics == ("pearson", "spearman")
    assert {ex.target for ex in load_task(spec).train} <= set(spec.label_words)
    (tmp_path / "g.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "ans": [f"a{i}", "b"]}) + "\n" for i in range(20)))
    gen = {"name": "qa", "kind": "generation", "fields": ["q"], "template": "qa question: {q}", "target": "ans",
           "data": {"train": "g.jsonl"}, "split": {"validation": 2, "test": 2}}
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(gen))
    ex = load_task(read_task_file(tmp_path / "gen.yaml").spec).train[0]
    assert ex.answers[1] == "b" and ex.target == ex.answers[0]


# ---------------------------------------------------------------------- errors
BAD = [  # (change to the content, words the one-line error must hold)
    ({"label": {"column": "prio", "words": {"urgent": "urgent", "routine": "routine"}}},
     "train.csv: no column 'prio' (for label); columns present: subject, body, priority"),
    ({"fields": {"subject": "subject", "body": "Body"}}, "no column 'Body' (for body); columns present: subject, body"),
    ({"fields": ["subject", "bodi"]}, "template: {body} is not a field of this task; fields: subject, bodi"),
    ({"metrics": ["acc"]}, "metrics[0]: unknown metric 'acc'; allowed: accuracy, mcc, f1"),
    ({"template": "tickets subject: {subjet}"}, "template: {subjet} is not a field of this task; fields: subject, body"),
    ({"templates": {"natural": {"format": "Subject: {subject}\nUrgent?", "label_words": ["yes"]}}},
     "templates.natural.label_words: 1 words; the task has 2 labels"),
    ({"kind": "ranking"}, "kind: 'ranking' is not allowed; allowed: classification, regression, generation"),
    ({"lables": {}}, "lables: unknown key; allowed: name, kind"),
    ({"label": {"column": "priority", "words": ["urgent"]}}, "label.words: a classification task needs at least 2"),
    ({"main_metric": "f1"}, "main_metric: 'f1' is not allowed; allowed: accuracy"),
    ({"data": {"train": "train.csv", "validation": "test.csv"}}, "data: give train (+ eval"),
    ({"data": {"train": "nope.csv"}}, "data file(s) nope.csv not found (relative paths start at the task file's folder"),
    ({"name": "My Tickets"}, "name: 'My Tickets': expected lower-case letters"),
    ({"split": {"validation": 0, "test": 2}}, "split.validation: expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("change,words", BAD, ids=[w.split(":")[0][:24] for _, w in BAD])
def test_bad_task_files_fail_in_one_line_naming_file_and_key(tmp_path, capsys, change, words):
    path = write_task(tmp_path, {**TICKETS, **change})
    with pytest.raises(DataError, match=None) as err:
        load_task(read_task_file(path).spec)
    assert words in str(err.value)
    if isinstance(err.value, TaskFileError):
        assert str(err.value).startswith(str(path))
    assert main(["data", "describe", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]


def test_a_label_value_with_no_word_names_the_file_and_line(tmp_path, capsys):
    path = write_task(tmp_path)
    rows = _rows(40)
    rows[6]["priority"] = "urgnet"
    write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(RowError) as err:
        load_task(read_task_file(path).spec)
    assert str(err.value).startswith("train.csv, line 8: label 'urgnet' not in the label set; expected one of")
    assert main(["data", "check", str(path)]) == 1  # every row validated, the bad one named
    assert "train.csv, line 8: label 'urgnet'" in capsys.readouterr().err
    assert load_task(read_task_file(path).spec, skip_bad_rows=True).bad_rows == 1


def test_not_a_task_and_not_a_file(tmp_path, capsys):
    assert main(["data", "describe", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such task file" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert main(["data", "describe", str(tmp_path / "broken.yaml")]) == 2
    assert "broken.yaml: not valid YAML" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert main(["data", "describe", str(tmp_path / "list.json")]) == 2
    assert "list.json: a task file is a mapping with keys name, kind" in capsys.readouterr().err


# ---------------------------------------------------------------------- identity
def test_identity_is_the_content_not_the_path(tmp_path):
    from ept.config import TrainConfig
    from ept.training.rundir import RunDir, StaleRunError

    path = write_task(tmp_path / "a")
    cfg = TrainConfig(task=str(path), out=str(tmp_path / "run"))
    assert (cfg.task, cfg.run_dir().name) == ("tickets", "run")
    assert TrainConfig(task=str(path)).run_dir().name == "tickets-ept-minilm-s0"
    rd = RunDir(cfg.out)
    rd.write_config(cfg.to_dict())
    again = TrainConfig.from_dict(rd.read_config())  # config.json alone rebuilds the task: no re-reading
    assert again.spec == cfg.spec and again.to_dict() == cfg.to_dict()
    # moved (with its data) and re-formatted: the same run
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = tmp_path / "b" / "tickets.yaml"
    moved.write_text("# my tickets\n" + json.dumps(TICKETS, indent=4))  # as YAML: the same content
    swapped = {**TICKETS, "label": {"column": "priority", "words": {"routine": "routine", "urgent": "urgent"}}}
    assert rd.check_identity(TrainConfig(task=str(moved), out=cfg.out).to_dict()) == "same"
    # edited: a different run, refused like any other config change (label order is label meaning)
    for edited in ({**TICKETS, "template": "subject: {subject} body: {body}"}, swapped):
        moved.write_text(yaml.safe_dump(edited, sort_keys=False))
        with pytest.raises(StaleRunError, match="task_spec: 'sha256:"):
            rd.check_identity(TrainConfig(task=str(moved), out=cfg.out).to_dict())


# ---------------------------------------------------------------------- export-task
@pytest.mark.parametrize("task", ["sst2", "rte", "wsc", "stsb"])
def test_export_task_round_trips(data_dir, tmp_path, capsys, task):
    """`ept data export-task NAME > NAME.yaml`: the file gives the built-in's splits, inputs and labels."""
    assert main(["data", "export-task", task, "--data-dir", str(data_dir)]) == 0
    path = tmp_path / f"{task}.yaml"
    path.write_text(capsys.readouterr().out)
    builtin, mine = load_task(task, data_dir=data_dir), load_task(read_task_file(path).spec)
    assert builtin.sizes() == mine.sizes()
    for split in ("train", "validation", "test"):
        assert getattr(builtin, split) == getattr(mine, split), split
    assert read_task_file(path).spec.template_names == builtin.spec.template_names  # its natural template too


# ---------------------------------------------------------------------- sweeps
def test_sweep_over_two_task_files(tmp_path, mini_data):
    from ept.sweep import load_spec

    write_task(tmp_path / "tasks")
    natural = {**TICKETS, "name": "tickets-plain", "template": "Subject: {subject}. Body: {body}"}
    (tmp_path / "tasks" / "plain.yaml").write_text(yaml.safe_dump(natural, sort_keys=False))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "out": str(tmp_path / "runs"), "steps": 2, "data_dir": str(mini_data),
        "grid": {"task": ["tasks/tickets.yaml", "tasks/plain.yaml", "sst2"]}}))  # relative to the spec
    sweep = load_spec(tmp_path / "spec.yaml")
    assert [r.name for r in sweep.runs] == ["tickets-ept-s0", "tickets-plain-ept-s0", "sst2-ept-s0"]
    assert sweep.runs[0].config["task_spec"]["template"] == TICKETS["template"]
    assert sweep.runs[2].config["task_spec"] is None
    # a task_overrides key names its task however either is spelled ("./x", an absolute path, "a/../x")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "out": str(tmp_path / "runs"), "steps": 2, "data_dir": str(mini_data),
        "grid": {"task": ["./tasks/tickets.yaml", f"{tmp_path}//tasks/plain.yaml"]},
        "task_overrides": {"tasks/../tasks/tickets.yaml": {"steps": 3}, str(tmp_path / "tasks" / "plain.yaml"): {"steps": 4}}}))
    assert [r.config["steps"] for r in load_spec(tmp_path / "spec.yaml").runs] == [3, 4]


# ---------------------------------------------------------------------- serving = ept eval
SERVED = {**TICKETS, "data": {"train": "train.csv", "validation": "test.csv", "test": "test.csv"},
          "templates": {"plain": {"format": "Subject: {subject}\nBody: {body}\nPriority:", "label_words": ["high", "low"]}}}


@pytest.mark.parametrize("backbone,template", [("tiny_bert", "t5"), ("tiny_t5_dir", "t5"), ("tiny_llama_dir", "plain")])
def test_serving_a_row_gives_ept_evals_score(request, tmp_path, capsys, backbone, template):
    """Train on a CSV task file, `ept eval`, `ept export`, serve the test rows by field name: every
    row scores as the eval scorer scores it, and the served predictions give `ept eval`'s metric."""
    import torch

    from ept.batching import collate
    from ept.evaluation import load_run
    from ept.heads import make_scorer
    from ept.serving.server import build_server, load_prompts
    from ept.tasks import score

    path = write_task(tmp_path / "task", SERVED, n_train=24, n_test=10)
    run, exp = tmp_path / "run", tmp_path / "exp"
    assert main(["train", "--task", str(path), "--backbone", request.getfixturevalue(backbone), "--steps", "2",
                 "--eval-every", "1", "--max-length", "64", "--precision", "fp32", "--template", template,
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["export", str(run), "--out", str(exp)]) == 0

    server = build_server(load_prompts({"tickets": exp}))  # the export carries the task: no --labels
    raw = _rows(10, 1000)
    rows = [{"task": "tickets", "inputs": {"subject": r["subject"], "body": r["body"]}} for r in raw]
    served = server.score(rows)
    assert served == server.score([{"task": "tickets", "fields": [r["subject"], r["body"]]} for r in raw])

    cfg, model = load_run(run)
    spec = cfg.spec.with_template(cfg.template)
    examples = load_task(spec).test
    # serving renders a row as training did (the tiny models' WordPiece reads a newline as a space:
    # the rendered text itself is compared, so a template's line breaks count)
    assert [spec.render(r["inputs"]) for r in rows] == [(ex.source, ex.fields) for ex in examples]
    if server.kind != "encoder":  # an already formatted input, under its own key, is used as it is
        assert served == server.score([{"task": "tickets", "source": ex.source} for ex in examples])
    scorer = make_scorer(model.eval(), spec, cfg.eval_mode, label_score_eos=cfg.label_score_eos)
    batch = collate(model.tokenizer, scorer.encode(examples, 64).features)
    with torch.no_grad():
        want = scorer.logits(batch) if server.kind == "encoder" else scorer.label_scores(batch)
    torch.testing.assert_close(torch.tensor([r["scores"] for r in served]), want.float(), rtol=1e-4, atol=1e-4)
    got = score(spec, [r["prediction"] for r in served], examples)
    assert got[spec.main_metric] == pytest.approx(metrics[spec.main_metric])
    assert {r["label"] for r in served} <= set(spec.label_words)
    with pytest.raises(ValueError, match=r"^row 0: task .tickets. has 2 input fields"):
        server.score([{"task": "tickets", "text": "server down"}])
    if server.kind == "encoder":  # `ept eval RUN --task FILE` (transfer), `ept report`/`analyze` read the run's spec
        other = write_task(tmp_path / "other", {**SERVED, "name": "tickets-b"}, n_train=24, n_test=10)
        assert main(["eval", str(run), "--task", str(other), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task"] == "tickets-b"
        assert (run / "eval" / "tickets-b-test.json").is_file()
        from ept.analysis.runs import load_records

        records, _ = load_records([run])
        assert records[0].task == "tickets" and records[0].spec == cfg.spec
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
        assert "| tickets (accuracy) |" in (tmp_path / "report" / "report.md").read_text()


def test_http_rows_take_one_input_key():
    from pydantic import ValidationError

    from ept.serving.http_app import PredictRequest

    body = PredictRequest(rows=[{"task": "t", "inputs": {"subject": "a", "body": "b"}}, {"task": "t", "fields": ["a", "b"]},
                                {"task": "s", "text": "a"}, {"task": "t", "source": "tickets subject: a body: b"}])
    assert [r.as_row() for r in body.rows] == [{"task": "t", "inputs": {"subject": "a", "body": "b"}},
                                               {"task": "t", "fields": ["a", "b"]}, {"task": "s", "text": "a"},
                                               {"task": "t", "source": "tickets subject: a body: b"}]
    for bad in ({"task": "t"}, {"task": "t", "text": "a", "source": "b"}, {"task": "t", "inputs": {"a": None}}):
        with pytest.raises(ValidationError):
            PredictRequest(rows=[bad])


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["minilm", "smollm2-135m"])
def test_the_readme_task_file_trains_evaluates_exports_and_serves(tmp_path, capsys, backbone):
    """Acceptance (issue 20): the README's task file, as printed there, over a CSV of tickets, on
    the real MiniLM and SmolLM2 (natural template): train, eval, export, serve by field name."""
    from ept.serving.server import build_server, load_prompts
    from ept.tasks import score

    if backbone != "minilm":
        from ept.fetch import cached_model_path

        try:
            cached_model_path(backbone)
        except FileNotFoundError as err:
            pytest.skip(str(err))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme[readme.index("# tickets.yaml (relative paths"):]
    (tmp_path / "tickets.yaml").write_text(text[:text.index("```")])
    write_csv(tmp_path / "tickets.csv", _rows(260))
    run, exp = tmp_path / "run", tmp_path / "exp"
    natural = ["--template", "natural", "--precision", "fp32"] if backbone != "minilm" else []
    assert main(["train", "--task", str(tmp_path / "tickets.yaml"), "--backbone", backbone, "--steps", "6",
                 "--eval-every", "3", "--max-eval-examples", "40", "--out", str(run), "--quiet", *natural]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["export", str(run), "--out", str(exp)]) == 0
    server = build_server(load_prompts({"tickets": exp}))
    spec = read_task_file(tmp_path / "tickets.yaml").spec
    spec = spec.with_template("natural") if natural else spec
    data = load_task(spec)
    test = data.test[:40]
    served = server.score([{"task": "tickets", "inputs": dict(zip(spec.fields, ex.fields))} for ex in test])
    assert score(spec, [r["prediction"] for r in served], test)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_a_hub_task_file_reads_the_hub_dataset(tmp_path, monkeypatch):
    """The README's hub example, with `datasets.load_dataset` standing in for the network."""
    import datasets

    calls = []

    def fake(path, name=None, split=None):
        calls.append((path, name, split))
        n = 30 if split == "train" else 8
        return datasets.Dataset.from_list([{"sentence": f"{split} {i}", "label": i % 2, "idx": i} for i in range(n)])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme[readme.index("name: sst2-hub"):]
    (tmp_path / "hub.yaml").write_text(text[:text.index("```")])
    data = load_task(read_task_file(tmp_path / "hub.yaml").spec)
    assert calls == [("nyu-mll/glue", "sst2", "train"), ("nyu-mll/glue", "sst2", "validation")]
    assert data.sizes() == {"train": 30, "validation": 4, "test": 4}  # < 10K: the hub's validation halved
    assert (data.train[1].source, data.train[1].target) == ("sst2 sentence: train 1", "positive")
