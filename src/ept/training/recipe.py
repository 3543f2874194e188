"""Train a prompt method on a task with a frozen backbone (paper Section 4.4, Appendix B.2).

    ept train --task sst2 --method ept                       # embedded MiniLM, CPU-sized defaults
    ept train --task rte --method ept_star --backbone t5-base --steps 30000 --eval-every 1000
    torchrun --nproc_per_node 2 -m ept.cli train --task sst2 --method pt --steps 100
    accelerate launch --num_processes 2 -m ept.cli train --task sst2 --method pt --steps 100

A recipe in torchtune's shape: `setup_data`, `setup_model`, `setup_optimizer`, `train_step`, a
`Checkpointer` (last/ and best/, `ept.training.checkpointer`) and a `MetricLog` (steps.jsonl,
TensorBoard, progress bar; `ept.training.metric_log`). `run` claims the run folder, then `Recipe`
holds the run's state through its phases: setup -> resume -> train with evaluation every
`eval_every` steps, keeping the best state by the task's main validation metric -> test the best
state -> results.json. The run folder (`ept.training.rundir.RunDir`) is the only output.

Guarantees (README "Guarantees"): one writer per run folder (a lock); a folder holds one config
(its identity hash: a rerun with another config is refused, a finished one is skipped); a run
killed at any point resumes from its last checkpoint to bit-identical results (data order is a pure
function of seed and step; RNG, optimizer and schedule state are checkpointed); every checkpoint is
validated before use.

Multi-process (torchrun / accelerate launch): `accelerate.Accelerator` places the model and owns
the process group. Every rank sees the same global batch order and takes its slice of each batch;
the gradients of the trainable parameters are averaged in one flat all-reduce per step, so the
effective batch is `batch_size` whatever the number of processes. Every process evaluates its share
of the validation/test batches (`evaluate`: predictions gathered, the metrics equal one process's);
rank 0 writes.
"""

from __future__ import annotations

import json
import functools
import math
import time
from dataclasses import dataclass, field

import torch

from ept import __version__
from ept.batching import GROUP_WINDOW, batches, collate, feature_length, group_by_length, sorted_batches, to_device
from ept.checkpoint import export_prompt, export_record
# TrainConfig lives in the torch-free ept.config; re-exported so `from ept.training.recipe import TrainConfig` works.
from ept.config import PAPER_STEPS, SCHEDULERS, TrainConfig, task_meta  # noqa: F401
from ept.training.rundir import RunDir, RunDirError, read_jsonl  # noqa: F401  (read_jsonl: re-exported for older callers)
from ept.training.checkpointer import Checkpointer, optimizer_params
from ept.training.metric_log import MetricLog
from ept.training.stopping import StopRequested, graceful_stop


# ------------------------------------------------------------------------------ helpers
def mu_t(prompt: torch.Tensor | None) -> float | None:
    """Eq. 4: mean over prompt tokens of the L2 norm of the (projected) prompt."""
    return None if prompt is None else float(prompt.detach().float().norm(dim=-1).mean())


def raw_norm(model) -> float | None:
    """The same norm of the trainable raw prompt P (EPT: P1), before the network: Eq. 4 is written
    on the parameters, mu_t on P' (orders of magnitude apart for EPT); steps.jsonl logs both."""
    raw = getattr(getattr(model, "encoder", None), "prompt", None)
    return mu_t(raw) if isinstance(raw, torch.Tensor) else None


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


def evaluate(scorer, spec, tokenizer, encoded, examples, batch_size: int, device, accelerator=None,
             predictions: list | None = None) -> dict:
    """Metrics of `scorer` on `examples`: batches sorted by length (less padding), predictions put
    back in the rows' order, so the result equals in-order batching.

    With a multi-process `accelerator`, every process predicts its share of those batches and the
    (row, prediction) pairs of all processes are gathered (`accelerate.utils.gather_object`: any
    picklable prediction, generated strings included, and no padding rows to drop, unlike
    `gather_for_metrics` on tensors) before scoring: every process returns the one-process metrics."""
    from ept.precision import autocast
    from ept.tasks import score

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    pairs: list = []
    was_training = scorer.model.training
    scorer.model.eval()
    with torch.no_grad(), autocast(scorer.model, getattr(scorer.model, "precision", "fp32")):
        for rows, batch in sorted_batches(tokenizer, encoded, batch_size, rank, world):
            pairs.extend(zip(rows, scorer.predict(to_device(batch, device))))
    scorer.model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    preds = in_row_order(pairs, len(encoded))
    if predictions is not None:  # the caller keeps the per-row predictions (a row-level bootstrap needs them)
        predictions.extend(preds)
    return score(spec, preds, examples)


def in_row_order(pairs, n: int) -> list:
    """The predictions of (row, prediction) pairs as a list indexed by row; every row 0..n-1 must
    come exactly once (a shard lost or doubled would silently change the metrics)."""
    preds, seen = [None] * n, [False] * n
    for i, pred in pairs:
        if not 0 <= i < n or seen[i]:
            raise RuntimeError(f"evaluation row {i} {'is out of 0..' + str(n - 1) if not 0 <= i < n else 'came twice'}")
        preds[i], seen[i] = pred, True
    if not all(seen):
        raise RuntimeError(f"evaluation rows missing: {[i for i in range(n) if not seen[i]][:10]}")
    return preds


# ------------------------------------------------------------------------------ setup
@dataclass
class RunData:
    """The task's rows, the training order of the steps still to run, and their features."""

    task: object  # ept.tasks.TaskData
    valid: list
    test: list
    start: int
    order: list[list[int]]  # rows of each global step start..steps-1 (from order_from while grouping)
    features: dict = field(default_factory=dict)  # train row -> encoded features (used rows only)
    enc_valid: object = None
    enc_test: object = None
    truncated: int = 0
    order_from: int | None = None  # group_by_length: `order` covers whole windows from here, regrouped in encode()
    seed: int = 0
    steps: int = 0

    @property
    def spec(self):
        return self.task.spec

    def encode(self, scorer, max_length: int) -> "RunData":
        # Tokenise only the training rows this run will touch (the order is known in advance):
        # 400 steps of SST-2 need ~6K of its 66K rows. Done once here, never in the loop.
        # `scorer.encode`: the features its scorer reads (siamese pairs: the two sides apart).
        used = sorted(set(i for rows in self.order for i in rows))
        enc = scorer.encode([self.task.train[i] for i in used], max_length)
        self.features, self.truncated = dict(zip(used, enc.features)), enc.truncated
        self.enc_valid, self.enc_test = (scorer.encode(x, max_length) for x in (self.valid, self.test))
        if self.order_from is not None:  # group_by_length: now that lengths are known
            grouped = group_by_length(self.order, self.order_from, lambda i: feature_length(self.features[i]), self.seed)
            self.order = grouped[self.start - self.order_from: self.steps - self.order_from]
            self.order_from = None
        return self

    def batch(self, tokenizer, step: int, rank: int, world: int) -> dict:
        rows = self.order[step - self.start]
        per_rank = len(rows) // world
        return collate(tokenizer, [self.features[i] for i in rows[rank * per_rank:(rank + 1) * per_rank]])


def setup_data(cfg: TrainConfig, start: int) -> RunData:
    from ept.tasks import load_task

    data = load_task(cfg.spec, data_dir=cfg.data_dir, seed=cfg.split_seed, few_shot_k=cfg.few_shot, sample_seed=cfg.seed,
                     template=cfg.template)
    if not data.train:
        raise ValueError(f"task {cfg.task!r} has no training examples here ({data.source}); notes: {'; '.join(data.notes)}")
    first, last = start, cfg.steps
    if cfg.group_by_length:  # whole windows of steps, regrouped once their lengths are known (RunData.encode)
        first, last = start - start % GROUP_WINDOW, -(-cfg.steps // GROUP_WINDOW) * GROUP_WINDOW
    order = [batch_indices(len(data.train), cfg.batch_size, cfg.seed, s) for s in range(first, last)]
    return RunData(data, data.validation[: cfg.max_eval_examples], data.test[: cfg.max_eval_examples], start, order,
                   order_from=first if cfg.group_by_length else None, seed=cfg.seed, steps=cfg.steps)


def setup_model(cfg: TrainConfig, spec, device, warn=print):
    """(PromptedModel on `device` in train mode, its scorer); `model.precision` is the resolved
    compute precision (ept.precision), a frozen backbone already cast to it."""
    from ept.backbones import PromptedModel, load_backbone
    from ept.heads import make_scorer
    from ept.precision import apply_precision
    from ept.prompts import Init

    backbone, tokenizer = load_backbone(cfg.backbone, dtype=getattr(torch, cfg.dtype))
    prompt_cfg = cfg.method  # the typed method config
    label_ids = None
    if getattr(prompt_cfg, "init", None) is Init.LABEL:  # ft/lora/ia3 have no prompt init
        label_ids = tokenizer(" ".join(spec.label_words), add_special_tokens=False)["input_ids"]
    n_labels = len(spec.label_words) if cfg.linear_head else 0
    model = PromptedModel(backbone, tokenizer, prompt_cfg, n_labels, init_token_ids=label_ids,
                          sink_token=cfg.sink_token).to(device)
    apply_precision(model, cfg.precision, cfg.dtype, cfg.precision_fallback, warn=lambda m: warn(f"ept train: warning: {m}"))
    model.train()
    return model, make_scorer(model, spec, cfg.eval_mode, pair_encoding=cfg.pair_encoding, pair_head=cfg.pair_head,
                              label_score_eos=cfg.label_score_eos)


def _no_decay(model) -> set[str]:
    """Names of biases and normalisation weights: the HF Trainer exempts them from weight decay
    (its rule, written out: the module's class name says Norm, or the parameter is a bias)."""
    names = set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            if p_name == "bias" or "norm" in type(module).__name__.lower():
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def check_context(max_length: int, model, explicit: bool) -> None:
    """Refuse, before training, inputs the backbone cannot position: max_length plus the prompt
    (and BOS) over its `max_position_embeddings` would crash mid-run on absolute positions (BERT)."""
    limit = getattr(model.backbone.config, "max_position_embeddings", None)
    need = max_length + model.num_prompt_tokens() + (1 if model.lead_token_id is not None else 0)
    if limit and need > limit and (explicit or model.kind_ops.absolute_positions):
        raise ValueError(f"max_length={max_length} plus {model.num_prompt_tokens()} prompt token(s) is {need} positions; "
                         f"this backbone has {limit} (max_position_embeddings): use --max-length {limit - need + max_length} or less")


def setup_optimizer(cfg: TrainConfig, model, start: int = 0):
    """(AdamW, LambdaLR at step `start`). One parameter group unless `decay_norm_and_bias` is off."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.decay_norm_and_bias:
        groups = [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    else:
        exempt = _no_decay(model)
        groups = [{"params": [p for n, p in named if n not in exempt], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    if model.pair_head is not None and any(p.requires_grad for p in model.pair_head.parameters()):
        # The siamese head's scalars live on the cosine scale: their own small lr and no weight
        # decay (the prompt's lr 0.3 would throw a threshold around; decay would pull it to 0).
        from ept.heads import PAIR_HEAD_LR

        head = {id(p) for p in model.pair_head.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in head]} for g in groups]
        groups = [g for g in groups if g["params"]]
        groups.append({"params": list(model.pair_head.parameters()), "lr": PAIR_HEAD_LR, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])  # LambdaLR needs it to start at step > 0 (resume)
    if cfg.lr_scheduler == "linear":
        sched = get_linear_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps, last_epoch=start - 1)
    else:
        sched = get_constant_schedule_with_warmup(opt, cfg.warmup_steps, last_epoch=start - 1)
    return opt, sched


# ------------------------------------------------------------------------------ one step
def sync_gradients(params, accelerator) -> None:
    """Average gradients over processes in ONE flat all-reduce (a bucket of every trainable
    tensor). Not DistributedDataParallel: the scorers call the model's parts, not its forward,
    which DDP's hooks need, and the trainable set is small enough for a single bucket."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(_flatten_dense_tensors(grads), reduction="mean")
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g


def train_step(model, scorer, optimizer, batch, *, scheduler=None, max_grad_norm: float | None = None,
               accelerator=None) -> tuple[float, float | None]:
    """One optimizer step on a collated batch: loss -> backward -> gradient sync across processes
    -> optional clipping -> AdamW step -> schedule -> zero_grad. Returns (loss, mu_t of P')."""
    from ept.precision import autocast

    with autocast(model, getattr(model, "precision", "fp32")):
        loss = scorer.loss(batch).float()
    loss.backward()
    if (accelerator is not None and accelerator.num_processes > 1) or max_grad_norm is not None:
        params = optimizer_params(optimizer)
        if accelerator is not None and accelerator.num_processes > 1:
            sync_gradients(params, accelerator)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        mu = mu_t(model.prompt())
    return float(loss.detach()), mu


# ------------------------------------------------------------------------------ the run
def claim(cfg: TrainConfig, rundir: RunDir) -> dict | None:
    """Rank 0, lock held: the identity check, THEN the finished shortcut (a finished run of another
    config must never pass for this one). Returns the results of a finished run of this config."""
    rundir.check_identity(cfg.to_dict(), cfg.overwrite)
    done = rundir.read_results()
    if done and done.get("status") == "finished":
        test = (done.get("test") or {}).get(done.get("main_metric"))
        print(f"ept train: {rundir.path} already finished (same config): test {done.get('main_metric')} {test} "
              f"(delete its results.json to rerun)")
        return done
    return None


def run(cfg: TrainConfig, progress: bool = True) -> dict | None:
    """Train (or resume, or skip) the run of `cfg`; returns results.json's content on rank 0."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list

    # cpu=True on a machine without CUDA: accelerate then sets up gloo for torchrun's processes.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    from ept.precision import check_hardware

    check_hardware(cfg.precision, accelerator.device, cfg.precision_fallback)  # before a folder or a backbone
    rundir = RunDir(cfg.run_dir())
    try:
        outcome = [None]
        if accelerator.is_main_process:
            try:
                rundir.acquire()
                outcome = [("done", claim(cfg, rundir))]
            except (RunDirError, OSError) as err:
                outcome = [("error", err)]
        if accelerator.num_processes > 1:
            broadcast_object_list(outcome)
        kind, value = outcome[0]
        if kind == "error":
            raise value
        if value is not None:
            return value
        return Recipe(cfg, rundir, accelerator, progress).run()
    finally:
        rundir.release()
        accelerator.end_training()  # destroys the process group of a multi-process run


@dataclass
class Recipe:
    """One run's state, set by its phases in order (`run`): setup -> train (evaluating and
    checkpointing every eval_every steps) -> test the best state -> results.json. Each phase reads
    and writes these fields instead of passing them along (torchtune's recipe classes do the same)."""

    cfg: TrainConfig
    rundir: RunDir
    accelerator: object
    progress: bool = True
    t_start: float = field(default_factory=time.time)
    data: RunData | None = None
    model: object = None
    scorer: object = None
    opt: object = None
    sched: object = None
    ckpt: Checkpointer | None = None
    log: MetricLog | None = None
    counts: dict = field(default_factory=dict)
    best: dict = field(default_factory=lambda: {"step": None, "score": -math.inf, "metrics": None})
    status: str = "finished"
    error: str | None = None
    reached: int = 0  # steps done (cfg.steps, or where a run failed)
    test_metrics: dict | None = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def max_length(self) -> int:
        return self.cfg.max_length or self.data.spec.max_length

    def run(self) -> dict | None:
        self.setup()
        self.log = MetricLog(self.rundir, self.cfg, self.data.start, self.main, self.progress)
        try:
            self.train()
        finally:
            self.log.close()
        self.test()
        results = self.finish() if self.main else None
        self.accelerator.wait_for_everyone()
        return results

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Data, model, optimizer and (resuming) the last checkpoint; rank 0 writes the run's config."""
        from ept.envinfo import collect_env
        from ept.precision import set_threads

        cfg, device = self.cfg, self.accelerator.device
        set_threads(cfg.threads)
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {self.world} processes")
        self.ckpt = Checkpointer(self.rundir, cfg)
        state = self.ckpt.read_state()  # validated before anything heavy is loaded
        torch.manual_seed(cfg.seed)
        self.data = setup_data(cfg, state["step"] if state else 0)
        self.model, self.scorer = model, scorer = setup_model(cfg, self.data.spec, device)
        check_context(self.max_length, model, cfg.max_length is not None)
        self.data.encode(scorer, self.max_length)
        if model.pair_head is not None:  # siamese: threshold / anchors from training pairs (a resume overwrites them)
            fit = scorer.encode(self.data.task.train[: cfg.pair_fit_examples], self.max_length)
            scorer.fit(batches(model.tokenizer, fit, cfg.eval_batch_size))
        self.opt, self.sched = setup_optimizer(cfg, model, self.data.start)
        self.counts = self._counts()  # before the RNG state is restored: param_counts builds a prompt encoder (draws)
        if state:
            _, self.best = self.ckpt.load_last(model, self.opt, device)
        if cfg.compile:
            model.compiled = self._compile()
        if self.main:
            self.rundir.write_config(cfg.to_dict())
            self.rundir.write_env(collect_env(), self.data.start)
            self.rundir.trim_logs(self.data.start, warn=lambda m: print(f"ept train: warning: {m}"))
            print(self._banner())
            for note in self.data.task.notes:
                print(f"  note: {note}")

    def _counts(self) -> dict:
        from ept.backbones import param_counts

        model = self.model
        head_params = sum(p.numel() for p in model.pair_head.parameters()) if model.pair_head is not None else 0
        inference = param_counts(self.cfg.backbone, model.prompt_config, model.head.out_features if model.head else 0,
                                 head_params)["inference"]
        return {"trainable": model.trainable_parameters(), "inference": inference}

    def _banner(self) -> str:
        cfg, data, model = self.cfg, self.data, self.model
        return (f"ept train: {cfg.task} ({data.task.source}) | {cfg.method.name} on {cfg.backbone} | "
                f"trainable params: {self.counts['trainable']:,} || inference params: {self.counts['inference']:,} | "
                f"train/val/test {len(data.task.train)}/{len(data.valid)}/{len(data.test)} | steps {data.start}->{cfg.steps} | "
                f"batch {cfg.batch_size} x {self.world} proc | lr {cfg.lr:g} {cfg.lr_scheduler} | "
                f"device {self.accelerator.device} {model.precision}{' compiled' if model.compiled else ''} | "
                f"{torch.get_num_threads()} thread(s)"
                + (" | grouped by length" if cfg.group_by_length else "")
                + (f" | truncated {data.truncated}/{len(data.features)} train rows at {self.max_length}" if data.truncated else ""))

    def _compile(self) -> bool:
        """torch.compile the backbone, warmed up on the first step's batch (forward + backward) and a
        validation batch, so that a compiler error falls back to eager now, not mid-run."""
        from ept.precision import autocast, compile_backbone

        model, scorer, data, device = self.model, self.scorer, self.data, self.accelerator.device

        def warmup():
            batch = to_device(data.batch(model.tokenizer, data.start, self.accelerator.process_index, self.world), device)
            with autocast(model, model.precision):
                scorer.loss(batch).backward()
            if len(data.enc_valid):  # the no-grad graph too (every process evaluates its shard)
                _, first = next(sorted_batches(model.tokenizer, data.enc_valid, self.cfg.eval_batch_size))
                model.eval()
                with torch.no_grad(), autocast(model, model.precision):
                    scorer.predict(to_device(first, device))
                model.train()

        t = time.time()
        ok = compile_backbone(model, warmup, warn=lambda m: print(f"ept train: warning: {m}"))
        if ok and self.main:
            print(f"ept train: backbone compiled in {time.time() - t:.0f}s (torch.compile, warmed up)")
        return ok

    # ------------------------------------------------------------------ train
    def validate(self) -> dict:
        """Validation metrics; every process evaluates its shard and gets the same metrics."""
        return evaluate(self.scorer, self.data.spec, self.model.tokenizer, self.data.enc_valid, self.data.valid,
                        self.cfg.eval_batch_size, self.accelerator.device, self.accelerator)

    def train(self) -> None:
        """Steps data.start..cfg.steps; evaluation + checkpoint every eval_every, and a resume
        checkpoint (last/ only) every checkpoint_every steps in between, and at the step a SIGTERM or
        Ctrl-C came in (`ept.training.stopping`), which then ends the run resumable."""
        data, model = self.data, self.model
        device, rank = self.accelerator.device, self.accelerator.process_index
        if data.start == 0 and model.pair_head is not None:
            # Siamese pairs: the frozen sentence-embedding model is already good at the task, so the
            # init (step 0) is a candidate too; training must beat it on validation to replace it.
            self._evaluated(0, self.validate(), force=True)
        self.accelerator.wait_for_everyone()
        with graceful_stop(self.world == 1) as stop:  # SIGTERM / Ctrl-C: end the step, checkpoint it, stop
            self._steps(stop, device, rank)

    def _steps(self, stop, device, rank) -> None:
        cfg, data, model = self.cfg, self.data, self.model
        for step in range(data.start, cfg.steps):
            batch = to_device(data.batch(model.tokenizer, step, rank, self.world), device)
            lr = self.sched.get_last_lr()[0]
            loss, mu = train_step(model, self.scorer, self.opt, batch, scheduler=self.sched,
                                  max_grad_norm=cfg.max_grad_norm, accelerator=self.accelerator)
            if not math.isfinite(loss) or (mu is not None and not math.isfinite(mu)):
                what = "loss" if not math.isfinite(loss) else "prompt norm mu_t"
                self.status, self.error = "failed", (f"step {step + 1}: {what} overflowed (loss={loss}, mu_t={mu}) in "
                                                     f"{model.precision}; best checkpoint kept (step {self.best['step']})")
                if self.main:
                    print(f"ept train: error: {self.error}")
                self.reached = step
                return
            with torch.no_grad():
                self.log.step(step + 1, loss=loss, mu_t=mu, raw_norm=raw_norm(model), lr=lr)
            evaluating = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
            if evaluating:
                self._evaluated(step + 1, self.validate())
            stopping = stop.signum is not None
            if stopping or evaluating or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                if self.main:  # checkpoint last: everything up to here is redone identically after a kill
                    self.ckpt.save_last(model, self.opt, device, step + 1, self.best)
                self.accelerator.wait_for_everyone()  # best/ is written before any process reads it (test)
            if stopping:
                self.reached = step + 1
                raise StopRequested(stop.signum, step + 1)
        self.reached = cfg.steps

    def _evaluated(self, step: int, metrics: dict, force: bool = False) -> None:
        """Log a validation result; keep it (and save best/) when it beats the best so far."""
        main_metric = self.data.spec.main_metric
        improved = force or metrics[main_metric] > self.best["score"]
        if improved:  # on every process alike
            self.best = {"step": step, "score": metrics[main_metric], "metrics": metrics}
        if self.main:
            self.log.evaluation(step, metrics, main_metric)
            if improved:
                self.ckpt.save_best(self.model, step)

    # ------------------------------------------------------------------ test and results
    def test(self) -> None:
        """Test metrics of the best state (every process its shard); rank 0 exports its prompt, with its
        task and the step it was taken at (`reached` of cfg.steps were done), and writes what the
        best state predicted for each test row."""
        if self.best["step"] is None:
            return
        cfg, data, model, preds = self.cfg, self.data, self.model, []
        with self.ckpt.best_state(model):
            self.test_metrics = evaluate(self.scorer, data.spec, model.tokenizer, data.enc_test, data.test,
                                         cfg.eval_batch_size, self.accelerator.device, self.accelerator, predictions=preds)
            if self.main and model.prompt_config.has_prompt:
                export_prompt(model, self.rundir.export, cfg.backbone,
                              extra=export_record(data.spec, self.best["step"], self.reached, cfg.steps,
                                                  task_spec=cfg.task_spec, label_score_eos=cfg.label_score_eos,
                                                  precision=model.precision))
        if self.main:
            self.rundir.write_predictions("test", [{"row": i, "prediction": p, "label": x.label}
                                                   for i, (p, x) in enumerate(zip(preds, data.test))])

    def finish(self) -> dict:
        """Write results.json (rank 0)."""
        import transformers

        cfg, data, model, best, spec = self.cfg, self.data, self.model, self.best, self.data.spec
        steps = self.rundir.steps()
        results = {
            "status": self.status, "error": self.error, "task": cfg.task, "method": cfg.method.name,
            "backbone": cfg.backbone, "seed": cfg.seed, "steps": cfg.steps, "few_shot": cfg.few_shot,
            "trainable_params": self.counts["trainable"], "inference_params": self.counts["inference"],
            "best_step": best["step"], "main_metric": spec.main_metric, "validation": best["metrics"],
            "test": self.test_metrics, "final_mu_t": steps[-1]["mu_t"] if steps else None,
            "split_sizes": {"train": len(data.task.train), "validation": len(data.valid), "test": len(data.test)},
            "data_source": data.task.source,
            # which file(s) trained it, and whether they are the full official train set or a sample
            "train_data": {"files": list(data.task.train_files), "complete": data.task.train_complete},
            "wall_seconds": round(time.time() - self.t_start, 1),
            "world_size": self.world, "config_hash": self.ckpt.cfg_hash, "precision": model.precision,
            "threads": torch.get_num_threads(), "compiled": model.compiled,
            "versions": {"ept": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        }
        self.rundir.write_results(results)
        if self.test_metrics:
            print(f"ept train: best step {best['step']} | validation {spec.main_metric} {best['score']:.2f} | "
                  f"test {spec.main_metric} {self.test_metrics[spec.main_metric]:.2f} | {self.rundir.path}")
        return results
