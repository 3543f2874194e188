"""`ept train` / `ept eval`: run folder, resume after SIGKILL, determinism, overflow, two processes,
and one end-to-end run on real SST-2 with the real MiniLM that must learn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ept.cli import main
from ept.training.recipe import TrainConfig, batch_indices, run


def _cfg(tiny_bert, data_dir, out, **kw):
    base = dict(task="sst2", method="ept", backbone=tiny_bert, steps=12, eval_every=4, batch_size=8,
                max_eval_examples=48, max_length=32, data_dir=str(data_dir), out=str(out), tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(results):
    return {k: results[k] for k in ("best_step", "validation", "test", "final_mu_t")}


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(50, 16, 3, s) for s in range(10)]
    assert a == [batch_indices(50, 16, 3, s) for s in range(10)]
    assert sorted(sum(a[:3], []) + a[3][:2]) == list(range(50))  # epoch 0 covers every row once
    assert a != [batch_indices(50, 16, 4, s) for s in range(10)]


def test_run_folder_and_determinism(tiny_bert, data_dir, tmp_path):
    r1 = run(_cfg(tiny_bert, data_dir, tmp_path / "a"), progress=False)
    r2 = run(_cfg(tiny_bert, data_dir, tmp_path / "b"), progress=False)
    assert r1["status"] == "finished" and _metrics(r1) == _metrics(r2)
    out = tmp_path / "a"
    for name in ("config.json", "env.json", "steps.jsonl", "eval.jsonl", "results.json",
                 "best/method.safetensors", "export/prompt.safetensors", "export/peft/adapter_config.json"):
        assert (out / name).exists(), name
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 13)) and all(s["mu_t"] > 0 for s in steps)
    assert [json.loads(line)["step"] for line in (out / "eval.jsonl").read_text().splitlines()] == [4, 8, 12]
    assert r1["trainable_params"] == 3 * 32 and r1["inference_params"] == 32
    assert set(r1["test"]) >= {"accuracy"} and r1["split_sizes"]["test"] == 48
    # a finished run is not redone
    assert run(_cfg(tiny_bert, data_dir, out), progress=False) == r1
    # ept eval reproduces the test score of the best state
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads((out / "eval" / "sst2-test.json").read_text())["accuracy"] == r1["test"]["accuracy"]


@pytest.mark.integration
def test_resume_after_sigkill_gives_the_same_results(tiny_bert, data_dir, tmp_path):
    reference = run(_cfg(tiny_bert, data_dir, tmp_path / "ref", steps=40, eval_every=10), progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ept.cli", "train", "--task", "sst2", "--method", "ept", "--backbone", tiny_bert,
           "--steps", "40", "--eval-every", "10", "--batch-size", "8", "--max-eval-examples", "48",
           "--max-length", "32", "--data-dir", str(data_dir), "--out", str(out), "--tensorboard", "false", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "last" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed; make it longer"
    resumed = run(_cfg(tiny_bert, data_dir, out, steps=40, eval_every=10), progress=False)
    assert _metrics(resumed) == _metrics(reference)
    steps = [json.loads(line)["step"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_checkpoints_between_evaluations_resume_to_the_same_results(tiny_bert, data_dir, tmp_path, monkeypatch):
    """`checkpoint_every`: last/ is also written between evaluations (here at step 5 of an eval_every
    of 20), a run stopped after it resumes from there to the uninterrupted run's results, and the
    setting is not part of the run's identity (the same folder resumes without it)."""
    import ept.training.recipe as T

    reference = run(_cfg(tiny_bert, data_dir, tmp_path / "ref", steps=20, eval_every=20), progress=False)
    out = tmp_path / "cut"
    real_step, calls = T.train_step, []

    def stopped(*args, **kw):
        calls.append(1)
        if len(calls) > 7:
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(T, "train_step", stopped)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny_bert, data_dir, out, steps=20, eval_every=20, checkpoint_every=5), progress=False)
    monkeypatch.setattr(T, "train_step", real_step)
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 5 and state["best"]["step"] is None  # a checkpoint no evaluation made
    resumed = run(_cfg(tiny_bert, data_dir, out, steps=20, eval_every=20), progress=False)
    assert _metrics(resumed) == _metrics(reference)
    assert [json.loads(line)["step"] for line in (out / "steps.jsonl").read_text().splitlines()] == list(range(1, 21))


def test_overflow_stops_with_a_clear_message(tiny_bert, data_dir, tmp_path):
    results = run(_cfg(tiny_bert, data_dir, tmp_path / "nan", lr=1e30), progress=False)
    assert results["status"] == "failed"
    assert "step 1" in results["error"] and "overflowed" in results["error"]
    saved = json.loads((tmp_path / "nan" / "results.json").read_text())
    assert saved["status"] == "failed"


def test_config_precedence_and_bad_input(tiny_bert, data_dir, tmp_path, capsys):
    from ept.commands.train import config_from_args
    from ept.cli import build_parser

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("task: rte\nsteps: 7\nlr: 0.1\nmethod_options: {hidden_size: 5}\n")
    args = build_parser().parse_args(["train", "--config", str(cfg_file), "--steps", "9", "--method", "ept"])
    cfg = config_from_args(args)
    assert (cfg.task, cfg.steps, cfg.lr, cfg.method.name, cfg.method.hidden_size) == ("rte", 9, 0.1, "ept", 5)
    cfg_file.write_text("task: rte\nstepz: 7\n")
    assert main(["train", "--config", str(cfg_file)]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["train", "--method", "pt", "--hidden-size", "3"]) == 2
    assert "hidden_size" in capsys.readouterr().err


@pytest.mark.integration
def test_two_processes(tiny_bert, data_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ept.cli",
           "train", "--task", "sst2", "--method", "pt", "--backbone", tiny_bert, "--steps", "6", "--eval-every", "3",
           "--batch-size", "8", "--max-eval-examples", "32", "--max-length", "32", "--data-dir", str(data_dir),
           "--out", str(out), "--tensorboard", "false", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["world_size"] == 2
    assert len((out / "steps.jsonl").read_text().splitlines()) == 6
    assert [json.loads(line)["step"] for line in (out / "eval.jsonl").read_text().splitlines()] == [3, 6]
    assert results["split_sizes"]["test"] == 32 and results["best_step"] in (3, 6)
    # the best state the two processes saved reproduces, in one process, the validation and test
    # metrics the two processes computed each on its shard (gathered)
    for split in ("test", "validation"):
        assert main(["eval", str(out), "--json", "--split", split]) == 0
        one = json.loads((out / "eval" / f"sst2-{split}.json").read_text())
        assert {k: one[k] for k in results[split]} == results[split]


@pytest.mark.slow
def test_ept_learns_sst2_on_minilm(data_dir, tmp_path):
    """Real data, real model: EPT must beat the prompt-free label-scoring head (by >= 2.5 points,
    10 of 400 rows). The margin depends on the CPU: lr 0.3 training is chaotic, and the same code,
    seed and packages gave +5 or more on an AVX2 EPYC and +2.75 (67.5 -> 70.25) on an AVX-512 one,
    whose matmul kernels round differently."""
    from ept.backbones import PromptedModel, load_backbone
    from ept.kinds import encode
    from ept.heads import make_scorer
    from ept.prompts import method_config
    from ept.tasks import load_task
    from ept.training.recipe import evaluate

    cfg = TrainConfig(task="sst2", method="ept", steps=300, eval_every=100, max_length=64,
                      max_eval_examples=400, data_dir=str(data_dir), out=str(tmp_path / "e2e"), tensorboard=False)
    results = run(cfg, progress=False)
    data = load_task("sst2", data_dir=str(data_dir), seed=cfg.split_seed)
    backbone, tok = load_backbone("minilm")
    bare = PromptedModel(backbone, tok, method_config("ft"))  # no prompt at all, nothing trained
    bare.requires_grad_(False)
    valid = data.validation[:400]
    baseline = evaluate(make_scorer(bare, data.spec), data.spec, tok, encode(tok, valid, "encoder", 64), valid, 64, "cpu")
    print(f"no prompt {baseline['accuracy']:.1f} vs EPT {results['validation']['accuracy']:.1f}")
    assert results["validation"]["accuracy"] >= baseline["accuracy"] + 2.5
    assert results["test"]["accuracy"] >= 65


def test_seq2seq_training_on_tiny_t5(tiny_t5_dir, data_dir, tmp_path, capsys):
    losses = {}
    for eval_mode in ("rank", "generate"):
        out = tmp_path / eval_mode
        results = run(_cfg(tiny_t5_dir, data_dir, out, task="rte", method="ept_star", steps=4, eval_every=2,
                           max_eval_examples=16, eval_mode=eval_mode), progress=False)
        assert results["status"] == "finished" and results["split_sizes"]["test"] == 16
        assert (results["test"]["accuracy"] * 16 / 100) == pytest.approx(round(results["test"]["accuracy"] * 16 / 100))
        # the saved best prompt, reloaded by `ept eval`, reproduces the test score of the run
        capsys.readouterr()
        assert main(["eval", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == results["test"]["accuracy"]
        losses[eval_mode] = [json.loads(line)["loss"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(losses["rank"]) == 4
    assert losses["rank"] == losses["generate"]  # the evaluation mode never changes training


@pytest.mark.integration  # two whole runs plus `ept eval` (~15 s)
@pytest.mark.parametrize("method", ["ft", "lora"])
def test_backbone_changing_methods_train_and_reload(tiny_bert, data_dir, tmp_path, method):
    out = tmp_path / method
    results = run(_cfg(tiny_bert, data_dir, out, method=method, steps=4, eval_every=2,
                       lr=1e-3), progress=False)
    assert results["status"] == "finished" and results["trainable_params"] > 1000
    assert not (out / "export").exists()  # no prompt to export
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads((out / "eval" / "sst2-test.json").read_text())["accuracy"] == results["test"]["accuracy"]


def test_eval_shards_cover_every_row_once_and_restore_the_order(minilm_tokenizer):
    """7 rows of distinct lengths, batches of 2, over 2 (and 3) processes: each process gets whole
    batches of the one-process sequence, together every row exactly once, put back in row order."""
    import torch

    from ept.batching import Encoded, sorted_batches
    from ept.training.recipe import in_row_order

    lengths = [3, 5, 2, 6, 4, 1, 5]
    enc = Encoded([{"input_ids": [7] * k, "attention_mask": [1] * k, "labels": 0, "index": i}
                   for i, k in enumerate(lengths)], 0)
    one = [(rows, batch) for rows, batch in sorted_batches(minilm_tokenizer, enc, 2)]
    assert [r for r, _ in one] == [[3, 1], [6, 4], [0, 2], [5]]  # longest first, ties in row order
    for world in (2, 3):
        shards = [list(sorted_batches(minilm_tokenizer, enc, 2, rank, world)) for rank in range(world)]
        for rank, shard in enumerate(shards):
            assert [r for r, _ in shard] == [r for r, _ in one[rank::world]]
            for (_, got), (_, want) in zip(shard, one[rank::world]):
                assert torch.equal(got["input_ids"], want["input_ids"])  # the same padded batches
        # a "prediction" that names its row: gathered shard after shard, restored to row order
        gathered = [(i, f"p{i}") for shard in shards for rows, _ in shard for i in rows]
        assert sorted(len(rows) for shard in shards for rows, _ in shard) == [1, 2, 2, 2]
        assert in_row_order(gathered, 7) == [f"p{i}" for i in range(7)]
    with pytest.raises(RuntimeError, match="row 3 came twice"):
        in_row_order([(i, i) for i in range(7)] + [(3, 3)], 7)
    with pytest.raises(RuntimeError, match=r"missing: \[6\]"):
        in_row_order([(i, i) for i in range(6)], 7)


@pytest.mark.integration  # two torchrun launches (~20 s)
@pytest.mark.parametrize("backbone, task, eval_mode", [("tiny_bert", "sst2", "rank"), ("tiny_t5_dir", "rte", "generate")])
def test_sharded_evaluation_equals_one_process(backbone, task, eval_mode, data_dir, tmp_path, request):
    """Two gloo processes each evaluate their share of 13 rows (batches 4+4 | 4+1) of the same model;
    the gathered predictions (labels; generated strings for T5) and metrics equal one process's."""
    sys.path.insert(0, os.path.dirname(__file__))
    from _shard_eval import evaluate_rows

    path = request.getfixturevalue(backbone)
    one = evaluate_rows(path, str(data_dir), task, eval_mode, 13)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(os.path.dirname(__file__), "_shard_eval.py"), path, str(data_dir), task, eval_mode, "13",
           str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        two = json.loads((tmp_path / f"out.{rank}.json").read_text())
        assert two["world"] == 2
        assert two["preds"] == one["preds"] and len(two["preds"]) == 13
        assert two["metrics"] == one["metrics"]
    if eval_mode == "generate":
        assert all(isinstance(p, str) for p in one["preds"])
