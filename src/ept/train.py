"""Train a prompt method on a task with a frozen backbone (paper Section 4.4, Appendix B.2).

    ept train --task sst2 --method ept                       # embedded MiniLM, CPU-sized defaults
    ept train --task rte --method ept_star --backbone t5-base --steps 30000 --eval-every 1000
    torchrun --nproc_per_node 2 -m ept.cli train --task sst2 --method pt --steps 100

Phases, top to bottom in `run`: setup (config, data, model, optimizer, resume) -> train with
evaluation every `eval_every` steps, keeping the best state by the task's main validation metric
-> test the best state -> write results.json. The run folder is the only output; every analysis
reads it. Writes are atomic, and a run killed at any point resumes from its last checkpoint to
the same results (data order is a pure function of seed and epoch; RNG and optimizer state are
checkpointed).

Multi-process (torchrun / accelerate launch): every rank sees the same global batch order and
takes its slice of each batch; gradients of the (few) trainable parameters are averaged with one
all_reduce each, so the effective batch is `batch_size` whatever the number of processes. Rank 0
evaluates and writes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from ept import __version__
from ept.batching import batches, collate, encode, to_device
from ept.checkpoint import (atomic_save_tensors, atomic_write_json, atomic_write_text, export_prompt, save_method,
                            trainable_state)
# TrainConfig lives in the torch-free ept.config; re-exported so `from ept.train import TrainConfig` works.
from ept.config import PAPER_STEPS, TrainConfig  # noqa: F401


# ------------------------------------------------------------------------------ helpers
def mu_t(prompt: torch.Tensor | None) -> float | None:
    """Eq. 4: mean over prompt tokens of the L2 norm of the (projected) prompt."""
    return None if prompt is None else float(prompt.detach().float().norm(dim=-1).mean())


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Rows of global step `step` (0-based): a pure function, so resuming needs no loader state.
    Epochs are reshuffled; a short last batch of an epoch is filled from the next epoch."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = epoch_order(n, seed, epoch)
        out.extend(order[offset: offset + batch_size - len(out)])
    return out


def evaluate(scorer, spec, tokenizer, encoded, examples, batch_size: int, device) -> dict:
    from ept.tasks import score

    preds: list = []
    was_training = scorer.model.training
    scorer.model.eval()
    with torch.no_grad():
        for batch in batches(tokenizer, encoded, batch_size):
            preds.extend(scorer.predict(to_device(batch, device)))
    scorer.model.train(was_training)
    return score(spec, preds, examples)


def _optimizer_state(opt, params) -> dict[str, torch.Tensor]:
    """AdamW state as flat tensors (safetensors, not pickles)."""
    out = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_optimizer_state(opt, params, state: dict) -> None:
    for key, v in state.items():
        i, k = key.split(".", 1)
        opt.state[params[int(i)]][k] = v.to(params[int(i)].device) if k != "step" else v


def _dist():
    """(rank, world) and the process group when launched by torchrun / accelerate launch."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def start_step(cfg: TrainConfig) -> int:
    """The step a run resumes from (0 for a fresh run)."""
    state = cfg.run_dir() / "last" / "state.json"
    return json.loads(state.read_text())["step"] if state.exists() else 0


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------ the run
def run(cfg: TrainConfig, progress: bool = True) -> dict:
    from ept.backbones import PromptedModel, load_backbone, param_counts
    from ept.envinfo import collect_env
    from ept.heads import make_scorer
    from ept.prompts import Init, method_config
    from ept.tasks import load_task

    t_start = time.time()
    rank, world = _dist()
    main = rank == 0
    run_dir = cfg.run_dir()
    results_path = run_dir / "results.json"
    if results_path.exists():
        done = json.loads(results_path.read_text())
        if done.get("status") == "finished":
            if main:
                test = (done.get("test") or {}).get(done.get("main_metric"))
                print(f"ept train: {run_dir} already finished: test {done.get('main_metric')} {test} "
                      f"(delete its results.json to rerun)")
            return done
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")

    # ---------------------------------------------------------------- setup
    prev = run_dir / "config.json"
    if prev.exists() and json.loads(prev.read_text()) != asdict(cfg):
        raise ValueError(f"{run_dir} holds a run with a different config; pass another --out or delete the folder")
    torch.manual_seed(cfg.seed)
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    data = load_task(cfg.task, data_dir=cfg.data_dir, seed=cfg.split_seed, few_shot_k=cfg.few_shot)
    spec = data.spec
    if not data.train:
        raise ValueError(f"task {cfg.task!r} has no training examples here ({data.source}); notes: {'; '.join(data.notes)}")
    valid, test = data.validation[: cfg.max_eval_examples], data.test[: cfg.max_eval_examples]
    dtype = getattr(torch, cfg.dtype)
    backbone, tokenizer = load_backbone(cfg.backbone, dtype=dtype)
    prompt_cfg = method_config(cfg.method, **cfg.method_options)
    label_ids = None
    if prompt_cfg.init is Init.LABEL:
        label_ids = tokenizer(" ".join(spec.label_words), add_special_tokens=False)["input_ids"]
    n_labels = len(spec.label_words) if cfg.linear_head else 0
    model = PromptedModel(backbone, tokenizer, prompt_cfg, n_labels, init_token_ids=label_ids).to(device)
    model.train()
    scorer = make_scorer(model, spec, cfg.eval_mode)
    max_len = cfg.max_length or spec.max_length
    # Tokenise only the training rows this run will touch (the order is known in advance):
    # 400 steps of SST-2 need ~6K of its 66K rows. Done once here, never in the loop.
    order = [batch_indices(len(data.train), cfg.batch_size, cfg.seed, s) for s in range(start_step(cfg), cfg.steps)]
    used = sorted(set(i for rows in order for i in rows))
    enc_used = encode(tokenizer, [data.train[i] for i in used], model.kind, max_len)
    train_features = dict(zip(used, enc_used.features))
    enc_valid, enc_test = (encode(tokenizer, x, model.kind, max_len) for x in (valid, test))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainable = model.trainable_parameters()
    counts = {"trainable": trainable, "inference": param_counts(cfg.backbone, prompt_cfg, n_labels)["inference"]}

    # ---------------------------------------------------------------- resume
    start, best = 0, {"step": None, "score": -math.inf, "metrics": None}
    last = run_dir / "last"
    if start_step(cfg):
        state = json.loads((last / "state.json").read_text())
        model.load_state_dict(load_file(str(last / "method.safetensors")), strict=False)
        _load_optimizer_state(opt, params, load_file(str(last / "optimizer.safetensors")))
        rng = load_file(str(last / "rng.safetensors"))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        start, best = state["step"], state["best"]
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", asdict(cfg))
        atomic_write_json(run_dir / "env.json", collect_env())
        # Drop log lines written after the checkpoint we resume from: they will be redone.
        for name in ("steps.jsonl", "eval.jsonl"):
            rows = [r for r in read_jsonl(run_dir / name) if r["step"] <= start]
            atomic_write_text(run_dir / name, "".join(json.dumps(r) + "\n" for r in rows))
        print(f"ept train: {cfg.task} ({data.source}) | {cfg.method} on {cfg.backbone} | "
              f"trainable params: {trainable:,} || inference params: {counts['inference']:,} | "
              f"train/val/test {len(data.train)}/{len(valid)}/{len(test)} | steps {start}->{cfg.steps} | "
              f"batch {cfg.batch_size} x {world} proc | device {device} {cfg.dtype}"
              + (f" | truncated {enc_used.truncated}/{len(used)} train rows at {max_len}" if enc_used.truncated else ""))
        for note in data.notes:
            print(f"  note: {note}")
    writer = None
    if main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1)

    # ---------------------------------------------------------------- train / evaluate
    from tqdm.auto import tqdm

    steps_log = open(run_dir / "steps.jsonl", "a") if main else None
    bar = tqdm(total=cfg.steps, initial=start, disable=not (main and progress), desc=f"{cfg.task}/{cfg.method}")
    status, error, last_val = "finished", None, None
    per_rank = cfg.batch_size // world
    for step in range(start, cfg.steps):
        rows = order[step - start][rank * per_rank:(rank + 1) * per_rank]
        batch = to_device(collate(tokenizer, [train_features[i] for i in rows]), device)
        loss = scorer.loss(batch)
        loss.backward()
        if world > 1:
            import torch.distributed as dist

            for p in params:
                dist.all_reduce(p.grad)
                p.grad /= world
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            mu = mu_t(model.prompt())
        loss_v = float(loss.detach())
        if not math.isfinite(loss_v) or (mu is not None and not math.isfinite(mu)):
            what = "loss" if not math.isfinite(loss_v) else "prompt norm mu_t"
            status = "failed"
            error = (f"step {step + 1}: {what} overflowed (loss={loss_v}, mu_t={mu}) with dtype {cfg.dtype}; "
                     f"best checkpoint kept (step {best['step']})")
            if main:
                print(f"ept train: error: {error}")
            break
        if main:
            steps_log.write(json.dumps({"step": step + 1, "loss": loss_v, "mu_t": mu}) + "\n")
            if writer:
                writer.add_scalar("train/loss", loss_v, step + 1)
                if mu is not None:
                    writer.add_scalar("train/mu_t", mu, step + 1)
            bar.set_postfix(loss=f"{loss_v:.3f}", mu_t=f"{mu:.3g}" if mu is not None else "-", val=last_val)
            bar.update(1)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            if main:
                steps_log.flush()
                metrics = evaluate(scorer, spec, tokenizer, enc_valid, valid, cfg.eval_batch_size, device)
                last_val = round(metrics[spec.main_metric], 2)
                with open(run_dir / "eval.jsonl", "a") as f:
                    f.write(json.dumps({"step": step + 1, **metrics}) + "\n")
                if writer:
                    for k, v in metrics.items():
                        writer.add_scalar(f"validation/{k}", v, step + 1)
                if metrics[spec.main_metric] > best["score"]:
                    best = {"step": step + 1, "score": metrics[spec.main_metric], "metrics": metrics}
                    save_method(model, run_dir / "best", cfg.backbone, {"step": step + 1, "task": cfg.task})
                # Checkpoint last: everything up to here is redone identically after a kill.
                atomic_save_tensors(last / "method.safetensors", trainable_state(model))
                atomic_save_tensors(last / "optimizer.safetensors", _optimizer_state(opt, params))
                rng = {"cpu": torch.get_rng_state()}
                if device.type == "cuda":  # dropout on the GPU draws from the device's generator
                    rng["cuda"] = torch.cuda.get_rng_state(device)
                atomic_save_tensors(last / "rng.safetensors", rng)
                atomic_write_json(last / "state.json", {"step": step + 1, "best": best})
            if world > 1:
                torch.distributed.barrier()
    bar.close()
    if steps_log:
        steps_log.close()
    if writer:
        writer.close()

    # ---------------------------------------------------------------- test the best state
    results = None
    if main:
        test_metrics = None
        if best["step"] is not None:
            final_state = {k: v.detach().clone() for k, v in trainable_state(model).items()}
            model.load_state_dict(load_file(str(run_dir / "best" / "method.safetensors")), strict=False)
            test_metrics = evaluate(scorer, spec, tokenizer, enc_test, test, cfg.eval_batch_size, device)
            if prompt_cfg.has_prompt:
                export_prompt(model, run_dir / "export", cfg.backbone)
            model.load_state_dict(final_state, strict=False)
        final_mu = read_jsonl(run_dir / "steps.jsonl")[-1]["mu_t"] if (run_dir / "steps.jsonl").stat().st_size else None
        import transformers

        results = {
            "status": status, "error": error, "task": cfg.task, "method": cfg.method, "backbone": cfg.backbone,
            "seed": cfg.seed, "steps": cfg.steps, "few_shot": cfg.few_shot,
            "trainable_params": counts["trainable"], "inference_params": counts["inference"],
            "best_step": best["step"], "main_metric": spec.main_metric,
            "validation": best["metrics"], "test": test_metrics, "final_mu_t": final_mu,
            "split_sizes": {"train": len(data.train), "validation": len(valid), "test": len(test)},
            "data_source": data.source, "wall_seconds": round(time.time() - t_start, 1), "world_size": world,
            "versions": {"ept": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        }
        atomic_write_json(results_path, results)
        if test_metrics:
            print(f"ept train: best step {best['step']} | validation {spec.main_metric} {best['score']:.2f} | "
                  f"test {spec.main_metric} {test_metrics[spec.main_metric]:.2f} | {run_dir}")
    if world > 1:
        torch.distributed.barrier()
    return results
