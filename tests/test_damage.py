"""No silently wrong result (issue 23): damaged files, caches, disks and label sets give one clear
line and exit 2 (or a note), never a normal-looking wrong result. Tiny BERT runs on real SST-2."""

from __future__ import annotations

import json

import pytest

from ept.cli import main
from ept.training.recipe import TrainConfig, run

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tiny_bert, data_dir, out, **kw):
    base = dict(task="sst2", method="ept", backbone=tiny_bert, steps=12, eval_every=4, batch_size=8,
                max_eval_examples=48, max_length=32, data_dir=str(data_dir), out=str(out), tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _flags(tiny_bert, data_dir, out, steps=12):
    return ["train", "--task", "sst2", "--method", "ept", "--backbone", tiny_bert, "--steps", str(steps),
            "--eval-every", "4", "--batch-size", "8", "--max-eval-examples", "48", "--max-length", "32",
            "--data-dir", str(data_dir), "--out", str(out), "--tensorboard", "false", "--quiet"]


@pytest.fixture(scope="module")
def finished(tiny_bert, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sst2"
    return out, run(_cfg(tiny_bert, data_dir, out), progress=False)


# ------------------------------------------------------------------ exports carry their task
def test_train_export_records_task_labels_and_step(finished):
    out, results = finished
    meta = json.loads((out / "export" / "prompt.json").read_text())
    assert meta["task"] == "sst2" and meta["label_words"] == ["negative", "positive"] and meta["num_labels"] == 2
    assert meta["step"] == results["best_step"] and (meta["reached"], meta["steps"], meta["partial"]) == (12, 12, False)


def test_serve_refuses_another_label_count_for_a_train_export(finished, tmp_path, capsys):
    out, _ = finished
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"task": "sst2", "text": "a gem"}\n')
    code = main(["serve", "--prompt", f"sst2={out / 'export'}", "--labels", "sst2=a,b,c", "--input", str(rows)])
    err = capsys.readouterr().err
    assert code == 2 and "3 label words" in err and "trained with 2 labels (sst2)" in err


def test_a_legacy_run_export_takes_its_task_from_the_run(finished, tmp_path):
    """An export written before exports recorded their task still gets its count checked."""
    import shutil

    from ept.checkpoint import load_exported
    from ept.serving.server import spec_for

    out, _ = finished
    legacy = tmp_path / "run"
    shutil.copytree(out, legacy)
    meta_path = legacy / "export" / "prompt.json"
    meta = json.loads(meta_path.read_text())
    for key in ("task", "task_kind", "label_words", "num_labels"):
        meta.pop(key, None)
    meta_path.write_text(json.dumps(meta))
    _, loaded = load_exported(legacy / "export")
    assert loaded.get("task") == "sst2"
    with pytest.raises(ValueError, match="3 label words .* trained with 2 labels"):
        spec_for("x", loaded, ["a", "b", "c"])


def test_http_put_refuses_another_label_count(finished, tiny_bert):
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from transformers import AutoModel, AutoTokenizer

    from ept.serving.http_app import ServeConfig, create_app
    from ept.serving.server import MultiTaskServer

    out, _ = finished
    server = MultiTaskServer(AutoModel.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(tiny_bert))
    config = ServeConfig(allowed_paths=(str(out),))
    with TestClient(create_app(config, server)) as client:
        put = client.put("/v1/prompts/x", json={"path": str(out / "export"), "labels": ["a", "b", "c"]})
        assert put.status_code == 422 and "3 label words" in put.text and "2 labels" in put.text
        put = client.put("/v1/prompts/x", json={"path": str(out / "export"), "labels": ["bad", "good"]})
        assert put.status_code == 200, put.text


def test_a_template_export_is_served_with_the_template_words():
    """`--template natural` trains RTE on "true"/"false": the export says so, the server scores those."""
    from ept.checkpoint import export_record
    from ept.serving.server import spec_for
    from ept.tasks import get_task

    meta = export_record(get_task("rte").with_template("natural"), step=4)
    assert (meta["template"], meta["label_words"]) == ("natural", ["true", "false"])
    assert spec_for("rte", meta).label_words == ("true", "false")


def test_regression_export_refuses_label_words():
    from ept.serving.server import spec_for

    words = [f"{x / 5:.1f}" for x in range(26)]  # as many as STS-B's label words: still not a classifier
    with pytest.raises(ValueError, match="regression task; label words do not apply"):
        spec_for("s", {"task": "stsb"}, words)


# ------------------------------------------------------------------ partial runs, Ctrl-C
def test_ctrl_c_says_how_to_resume_and_partial_export_and_eval_say_so(tiny_bert, data_dir, tmp_path, capsys,
                                                                      monkeypatch):
    import ept.training.recipe as T

    out = tmp_path / "cut"
    real_step, calls = T.train_step, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) > 9:  # after the checkpoint at step 8
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(T, "train_step", interrupted)
    assert main(_flags(tiny_bert, data_dir, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped (Ctrl-C)" in err and "step 8 of 12" in err and "run the same command" in err
    monkeypatch.setattr(T, "train_step", real_step)

    assert main(["export", str(out), "--out", str(tmp_path / "exp")]) == 0
    best = json.loads((out / "last" / "state.json").read_text())["best"]["step"]
    assert f"partial (step 8 of 12): best step {best}" in capsys.readouterr().err
    meta = json.loads((tmp_path / "exp" / "prompt.json").read_text())
    assert (meta["step"], meta["reached"], meta["steps"], meta["partial"]) == (best, 8, 12, True)
    assert meta["task"] == "sst2" and meta["num_labels"] == 2
    assert main(["eval", str(out), "--split", "validation"]) == 0
    assert f"partial (step 8 of 12): best step {best}" in capsys.readouterr().err

    assert main(_flags(tiny_bert, data_dir, out)) == 0  # resumed to the end
    assert json.loads((out / "results.json").read_text())["status"] == "finished"


# ------------------------------------------------------------------ serving: paths and ports
def test_http_put_path_is_restricted_to_the_served_folders(finished, tiny_bert, tmp_path):
    pytest.importorskip("httpx")
    import shutil

    from fastapi.testclient import TestClient
    from transformers import AutoModel, AutoTokenizer

    from ept.serving.http_app import ServeConfig, create_app
    from ept.serving.server import MultiTaskServer

    out, _ = finished
    root = tmp_path / "exports"
    shutil.copytree(out / "export", root / "sst2")
    outside = tmp_path / "elsewhere"
    shutil.copytree(out / "export", outside)
    (root / "link").symlink_to(outside)  # a symlink out of the allowed folder does not count as inside
    server = MultiTaskServer(AutoModel.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(tiny_bert))
    with TestClient(create_app(ServeConfig(allowed_paths=(str(root),)), server)) as client:
        assert client.put("/v1/prompts/a", json={"path": str(root / "sst2")}).status_code == 200
        for path in (outside, root / "link", root / ".." / "elsewhere", "/etc"):
            put = client.put("/v1/prompts/b", json={"path": str(path)})
            assert put.status_code == 403 and "--allow-path" in put.text, (path, put.text)
    with TestClient(create_app(ServeConfig(allowed_paths=(str(root), str(outside))), server)) as client:
        assert client.put("/v1/prompts/b", json={"path": str(outside)}).status_code == 200


def test_a_busy_port_fails_before_the_model_loads(finished, tmp_path, capsys, monkeypatch):
    import socket

    import ept.serving.server as S

    out, _ = finished
    monkeypatch.setattr(S, "build_server", lambda *a, **k: pytest.fail("the model was loaded"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--http", "--prompt", f"sst2={out / 'export'}", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "--port" in err


# ------------------------------------------------------------------ damaged task files
@pytest.fixture
def cb_copy(data_dir, tmp_path):
    """A copy of the real CB folder: train.jsonl (250 rows) and its FewGLUE 32-row fallback."""
    import shutil

    if not (data_dir / "cb" / "train.jsonl").is_file():
        pytest.skip("needs the real CB files")
    shutil.copytree(data_dir / "cb", tmp_path / "data" / "cb")
    return tmp_path / "data"


@pytest.mark.parametrize("damage", ["folder", "dangling symlink", "symlink loop"])
def test_a_damaged_train_file_is_an_error_not_a_fallback(cb_copy, damage, tiny_bert, tmp_path, capsys):
    from ept.tasks import load_task
    from ept.tasks.spec import DataError

    train = cb_copy / "cb" / "train.jsonl"
    train.unlink()
    if damage == "folder":
        train.mkdir()
    elif damage == "dangling symlink":
        train.symlink_to(cb_copy / "cb" / "gone.jsonl")
    else:
        train.symlink_to(train)
    with pytest.raises(DataError, match=r"cb/train\.jsonl: .*expected a readable file"):
        load_task("cb", data_dir=cb_copy)
    code = main(["train", "--task", "cb", "--method", "ept", "--backbone", tiny_bert, "--steps", "4",
                 "--data-dir", str(cb_copy), "--out", str(tmp_path / "run"), "--tensorboard", "false", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cb/train.jsonl" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "results.json").exists()
    assert main(["data", "check", "--data-dir", str(cb_copy)]) == 1
    out = capsys.readouterr()
    assert "| cb | superglue | error |" in out.out and "cb/train.jsonl" in out.err


def test_a_damaged_unused_fallback_is_reported_by_data_check(cb_copy, capsys):
    from ept.tasks import load_task

    sample = cb_copy / "cb" / "fewglue" / "train.jsonl"
    sample.unlink()
    sample.mkdir()
    assert load_task("cb", data_dir=cb_copy).train_files == ("cb/train.jsonl",)  # whole: it trains
    assert main(["data", "check", "--data-dir", str(cb_copy)]) == 1
    assert "cb/fewglue/train.jsonl: a folder; expected a readable file" in capsys.readouterr().err


def test_a_truly_absent_train_file_falls_back_and_says_which_file_trained(cb_copy, tiny_bert, tmp_path, capsys):
    from ept.report import make_report

    (cb_copy / "cb" / "train.jsonl").unlink()
    out = tmp_path / "runs" / "cb"
    results = run(_cfg(tiny_bert, cb_copy, out, task="cb", steps=4, eval_every=4), progress=False)
    assert results["status"] == "finished"
    assert results["train_data"] == {"files": ["cb/fewglue/train.jsonl"], "complete": False}
    make_report([str(out)], tmp_path / "report")
    assert "trained on a sample of the official training set: cb/fewglue/train.jsonl" in \
        (tmp_path / "report" / "report.md").read_text()


def test_an_empty_text_is_flagged_by_file_and_line(cb_copy, tiny_bert, tmp_path, capsys):
    lines = (cb_copy / "cb" / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[6])
    lines[6] = json.dumps({**row, "hypothesis": "  "})
    (cb_copy / "cb" / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["data", "check", "--data-dir", str(cb_copy)]) == 1
    err = capsys.readouterr().err
    assert "cb/train.jsonl, line 7" in err and "'hypothesis' is empty" in err
    code = main(["train", "--task", "cb", "--method", "ept", "--backbone", tiny_bert, "--steps", "4",
                 "--data-dir", str(cb_copy), "--out", str(tmp_path / "run"), "--tensorboard", "false", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cb/train.jsonl, line 7" in err and "'hypothesis' is empty" in err


# ------------------------------------------------------------------ checkpoints and resume
@pytest.fixture
def unfinished(finished, tmp_path):
    """A copy of the finished run without results.json: the next `ept train` resumes from last/."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    (out / "results.json").unlink()
    return out


def test_a_nan_checkpoint_is_refused_before_training(unfinished, tiny_bert, data_dir, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    path = unfinished / "last" / "method.safetensors"
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(path))
    assert main(_flags(tiny_bert, data_dir, unfinished)) == 2
    err = capsys.readouterr().err
    assert f"{path}: NaN/inf values in ['{name}']" in err and "delete" in err and "last" in err
    assert not (unfinished / "results.json").exists()


def test_a_checkpoint_of_mixed_steps_is_refused(unfinished, tiny_bert, data_dir, capsys):
    """last/'s files are replaced one by one: a disk that fills after the first, or a copy taken
    mid-write, leaves one step's weights beside another step's optimizer and counter. state.json
    records the files it was written with (and best/'s weights, written just before); a checkpoint
    that mixes files is refused, naming the file, before any step runs."""
    from safetensors.torch import load_file, save_file

    state = json.loads((unfinished / "last" / "state.json").read_text())
    assert set(state["files"]) == {"last/method.safetensors", "last/optimizer.safetensors", "last/rng.safetensors",
                                   "best/method.safetensors"}
    for name in ("last/method.safetensors", "best/method.safetensors"):
        path = unfinished / name
        original = path.read_bytes()
        save_file({k: v + 1e-3 for k, v in load_file(str(path)).items()}, str(path))  # "another step's"
        assert main(_flags(tiny_bert, data_dir, unfinished)) == 2
        err = capsys.readouterr().err
        assert f"{path} is not the file {unfinished / 'last' / 'state.json'} was written with" in err
        assert "delete" in err and not (unfinished / "results.json").exists()
        path.write_bytes(original)
    assert main(_flags(tiny_bert, data_dir, unfinished)) == 0  # the files back: it resumes and finishes


def test_resuming_with_another_thread_count_warns(unfinished, tiny_bert, data_dir, capsys):
    state = json.loads((unfinished / "last" / "state.json").read_text())
    assert state["threads"] == 1
    assert main(_flags(tiny_bert, data_dir, unfinished) + ["--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming with 2 thread(s); the run trained with 1" in out and "same --threads" in out


def test_identity_messages_print_the_neutral_value_not_none(tmp_path):
    from ept.training.rundir import RunDir, StaleRunError

    rd = RunDir(tmp_path / "run")
    rd.write_config(TrainConfig(task="sst2", method="ept", precision="bf16", out=str(rd.path)).to_dict())
    with pytest.raises(StaleRunError, match=r"precision: 'bf16' -> 'auto'"):
        rd.check_identity(TrainConfig(task="sst2", method="ept", out=str(rd.path)).to_dict())


def test_report_does_not_call_runs_mixed_over_a_pair_setting_of_a_single_sentence_task(tmp_path):
    from ept.analysis.runs import load_records
    from ept.report import build_cells

    for seed, encoding in ((0, None), (1, "siamese")):  # an old run (no pair_encoding: cross) and a new one
        folder = tmp_path / f"sst2-s{seed}"
        folder.mkdir()
        config = TrainConfig(task="sst2", method="ept", seed=seed, out=str(folder)).to_dict()
        if encoding is None:
            config.pop("pair_encoding")
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "results.json").write_text(json.dumps({
            "status": "finished", "task": "sst2", "method": "ept", "seed": seed, "main_metric": "accuracy",
            "validation": {"accuracy": 80.0}, "test": {"accuracy": 80.0 + seed}}))
    records, _ = load_records([tmp_path])
    cell = build_cells(records)[("minilm", "ept", "sst2", None)]
    assert cell.mixed == {} and cell.mean == 80.5


def test_a_full_disk_while_checkpointing_names_the_file_and_nothing_is_lost(unfinished, tiny_bert, data_dir,
                                                                            tmp_path, capsys, monkeypatch):
    """safetensors raises its own SafetensorError (no path) on ENOSPC: one line naming the file, exit 2;
    the previous checkpoint stays whole and the rerun resumes from it."""
    import safetensors.torch
    from safetensors import SafetensorError

    from ept.training.rundir import atomic_save_tensors

    before = (unfinished / "last" / "method.safetensors").read_bytes()

    def full(*args, **kw):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match=r"method\.safetensors: cannot write \(.*No space left on device"):
        atomic_save_tensors(unfinished / "last" / "method.safetensors", {})
    out = tmp_path / "full"
    assert main(_flags(tiny_bert, data_dir, out)) == 2  # fails at the first checkpoint (step 4)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # (above it: transformers' weight-loading bar)
    assert "Traceback" not in err and last.startswith("ept train: error: ")
    assert f"{out}/" in last and ".safetensors: cannot write" in last and "No space left on device" in last
    assert (unfinished / "last" / "method.safetensors").read_bytes() == before
    assert not list((out / "best").glob(".*.tmp")) and not list(out.glob("**/.*.tmp"))
    monkeypatch.undo()
    assert main(_flags(tiny_bert, data_dir, out)) == 0  # after freeing space: the same command finishes
