"""Every bad value is refused at the boundary (flags, config files, sweep specs, serving flags, data
rows) with one line naming the value and what is allowed, exit code 2, no traceback, before any
model or data loads (issue 14, items 2, 6 and 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ept.cli import main
from ept.config import TrainConfig


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"ept {command}: error: ") or err.startswith("ept: error: "), err
    return err


@pytest.mark.parametrize("flags,needles", [
    (["--max-eval-examples", "-5"], ["max_eval_examples=-5", ">= 1", "unset for all examples"]),
    (["--max-eval-examples", "0"], ["max_eval_examples=0", ">= 1"]),
    (["--max-length", "0"], ["max_length=0", ">= 1"]),
    (["--steps", "0"], ["steps=0", ">= 1"]),
    (["--steps", "ten"], ["--steps", "steps='ten'", "an integer"]),
    (["--batch-size", "-2"], ["batch_size=-2", ">= 1"]),
    (["--eval-every", "0"], ["eval_every=0"]),
    (["--eval-batch-size", "0"], ["eval_batch_size=0"]),
    (["--few-shot", "0"], ["few_shot=0", ">= 1"]),
    (["--lr", "0"], ["lr=0.0", "> 0"]),
    (["--lr", "-1"], ["lr=-1.0", "> 0"]),
    (["--lr", "nan"], ["lr='nan'", "finite"]),
    (["--weight-decay", "-0.1"], ["weight_decay=-0.1", ">= 0"]),
    (["--seed", "-1"], ["seed=-1", ">= 0"]),
    (["--dtype", "float8"], ["dtype='float8'", "float32, bfloat16, float16"]),
    (["--eval-mode", "greedy"], ["eval_mode='greedy'", "rank, generate"]),
    (["--tensorboard", "maybe"], ["tensorboard='maybe'", "true | false"]),
    (["--task", "sst3"], ["sst3", "sst2"]),
    (["--method", "ept", "--hidden-size", "-1"], ["hidden_size=-1", ">= 1"]),
    (["--method", "lora", "--lora-dropout", "1.5"], ["lora_dropout=1.5", "< 1.0"]),
    (["--backbone", "/nonexistent/model"], ["'/nonexistent/model'", "no such model folder", "hub id"]),
])
def test_train_refuses_bad_values(flags, needles, capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path / "run"), *flags]) == 2
    err = _one_line_error(capsys, "train")
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "run").exists()  # refused before anything was created


@pytest.mark.parametrize("text,needles", [
    ("steps: ten\n", ["steps='ten'", "an integer"]),
    ("steps: 1.5\n", ["steps=1.5", "an integer"]),
    ("lr: -1\n", ["lr=-1.0", "> 0"]),
    ("max_length: 0\n", ["max_length=0", ">= 1"]),
    ("linear_head: 1\n", ["linear_head=1", "true | false"]),
    ("batch_size: true\n", ["batch_size=True", "an integer"]),
    ("method_options: {num_tokens: -3}\n", ["num_tokens=-3", ">= 1"]),
    ("stepz: 10\n", ["stepz", "allowed"]),
])
def test_config_file_values_are_validated(text, needles, capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys, "train")
    for needle in needles:
        assert needle in err


def test_task_names_are_normalised_to_the_registry():
    cfg = TrainConfig(task="CB", method="EPT*")
    assert (cfg.task, cfg.method.name) == ("cb", "ept_star")
    assert cfg.run_dir().name.startswith("cb-ept_star-")


def test_typed_values_from_files_are_coerced():
    cfg = TrainConfig.from_dict({"steps": "10", "lr": "1e-3", "max_length": 64.0, "tensorboard": "false",
                                 "method_options": {"hidden_size": "5", "activation": "relu", "bias": "true"}})
    assert (cfg.steps, cfg.lr, cfg.max_length, cfg.tensorboard) == (10, 1e-3, 64, False)
    assert type(cfg.steps) is int and type(cfg.lr) is float and type(cfg.max_length) is int
    assert (cfg.method.hidden_size, cfg.method.activation.value, cfg.method.bias) == (5, "relu", True)  # typed
    assert cfg.to_dict()["method_options"] == {"hidden_size": 5, "bias": True, "activation": "relu"}  # recorded typed


def test_out_pointing_at_a_file(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["train", "--out", str(target)]) == 2
    assert "is a file" in _one_line_error(capsys, "train") and target.read_text() == "x"
    assert main(["train", "--out", str(target / "below")]) == 2
    assert "cannot create the folder" in _one_line_error(capsys, "train")


def test_out_in_an_unwritable_folder(capsys, tmp_path, monkeypatch):
    # As root every folder is writable, so the permission answer is simulated for this folder.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert f"{str(tmp_path)!r} is not writable" in _one_line_error(capsys, "train")


def test_out_that_cannot_be_created(capsys):
    assert main(["train", "--out", "/proc/ept-cannot-create/run"]) == 2
    assert "/proc/ept-cannot-create/run" in _one_line_error(capsys, "train")


def test_export_out_pointing_at_a_file(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["export", str(tmp_path), "--out", str(target)]) == 2
    err = _one_line_error(capsys, "export")
    assert "--out" in err and "is a file" in err and target.read_text() == "x"


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_serve_batch_size_must_be_positive(value, capsys, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"task": "a", "text": "x"}\n')
    assert main(["serve", "--prompt", f"a={tmp_path}", "--input", str(rows), "--batch-size", value]) == 2
    err = _one_line_error(capsys, "serve")
    assert "--batch-size" in err and repr(value) in err and ">= 1" in err


def test_eval_cap_must_be_positive(capsys, tmp_path):
    assert main(["eval", str(tmp_path), "--max-eval-examples", "-5"]) == 2
    err = _one_line_error(capsys, "eval")
    assert "--max-eval-examples" in err and "'-5'" in err


def test_sweep_values_fail_before_any_run(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"out: {tmp_path / 'runs'}\ntask: rte\nsteps: 10\ngrid:\n  lr: [0.1, -1]\n  max_length: [0, 64]\n")
    assert main(["sweep", str(spec), "--no-data-check"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lr=-1.0: must be > 0" in err and "max_length=0: must be >= 1" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value,shown", [("null", "NoneType None"), ('{"a": 1}', "dict {'a': 1}"), ("3", "int 3")])
def test_data_rows_with_non_string_text_are_refused(tmp_path, value, shown):
    from ept.tasks import RowError, load_task

    good = '{"premise": "P.", "hypothesis": "H.", "label": "neutral", "idx": 0}\n'
    (tmp_path / "cb").mkdir()
    (tmp_path / "cb" / "train.jsonl").write_text(good + '{"premise": %s, "hypothesis": "H.", "label": "neutral"}\n' % value)
    (tmp_path / "cb" / "val.jsonl").write_text(good * 2)
    with pytest.raises(RowError) as err:
        load_task("cb", data_dir=tmp_path)
    assert str(err.value) == f"cb/train.jsonl, line 2: text field 'premise' must be a string, got {shown}"


@pytest.mark.parametrize("backbone,needles", [
    ("/nonexistent/model", ["'/nonexistent/model'", "no such model folder"]),
    ("nobody/no-such-model", ["'nobody/no-such-model'", "cannot read its config"]),  # offline hub id
])
def test_params_unknown_backbone(backbone, needles, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["params", "--backbone", backbone, "--method", "ept"]) == 2
    err = _one_line_error(capsys, "params")
    for needle in needles:
        assert needle in err


def test_eval_task_name_is_checked_before_loading(capsys, tmp_path):
    assert main(["eval", str(tmp_path), "--task", "sst3"]) == 2
    assert "unknown task 'sst3'" in _one_line_error(capsys, "eval")


def test_max_length_over_the_model_limit_is_refused_before_training(tiny_bert, mini_data, tmp_path, capsys):
    """tiny_bert has 128 positions: 125 tokens + EPT*'s 10 prompt tokens cannot fit."""
    from ept.cli import main

    code = main(["train", "--task", "sst2", "--method", "ept_star", "--backbone", tiny_bert, "--max-length", "125",
                 "--steps", "2", "--data-dir", str(mini_data), "--out", str(tmp_path / "run"), "--tensorboard", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "max_length=125 plus 10 prompt token(s) is 135 positions" in err and "--max-length 118" in err
    assert not (tmp_path / "run" / "results.json").exists()
