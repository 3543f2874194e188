"""A run folder's checkpoints: last/ (what resuming needs) and best/ (the best validation state).

safetensors + JSON, written atomically (`ept.training.rundir`); every checkpoint is validated before it is
used, so a run killed at any point resumes from its last checkpoint to bit-identical results
(torchtune's `Checkpointer` is the model: one object that owns what a recipe saves and loads).

last/ is four files, each replaced atomically but not together: state.json, written last, records
the sha256 of the three it goes with and of best/'s weights (`files`). A checkpoint whose files
are not those (a write that failed half way, a disk that filled after the first file, a copy or
`git add` taken while a checkpoint was being written) is refused at resume, naming the file,
instead of resuming one step's weights with another step's optimizer and counter (`check_last`).
"""

from __future__ import annotations

import contextlib

import torch

from ept.atomic_io import file_digest
from ept.checkpoint import CheckpointError, check_state, load_state, read_tensors, save_method, trainable_state
from ept.config import TrainConfig, task_meta
from ept.training.rundir import LAST_METHOD, LAST_OPTIMIZER, LAST_RNG, STATE, RunDir, atomic_save_tensors, atomic_write_json, \
    config_hash, identity


def optimizer_params(opt) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


LAST_FILES = (LAST_METHOD, LAST_OPTIMIZER, LAST_RNG)


def check_last(run, state: dict, remedy: str, read=None) -> None:
    """Raise CheckpointError unless the run folder's checkpoint files are the ones last/state.json
    was written with. `read(relative path) -> bytes` reads them some other way (a git index: the
    experiments' commit helper). A state.json from before digests were recorded has nothing to
    check against."""
    recorded = state.get("files")
    if not recorded:
        return
    for name, want in recorded.items():
        path = run / name
        try:
            digest = file_digest(read(name) if read else path)
        except (OSError, KeyError) as err:
            raise CheckpointError(f"{path}: missing or unreadable ({err}); {remedy}") from None
        if digest != want:
            raise CheckpointError(f"{path} is not the file {run / 'last' / STATE} was written with (a checkpoint "
                                  f"written half way, or copied while it was being written); {remedy}")


class Checkpointer:
    """last/ (what resuming needs) and best/ (the best validation state) of a run folder.
    safetensors + JSON, written atomically; everything is validated before it is used."""

    def __init__(self, rundir: RunDir, cfg: TrainConfig):
        self.rd, self.cfg = rundir, cfg
        self.best_digest = None  # of best/'s weights, taken when they are written (not at every checkpoint)
        self.remedy = f"delete {rundir.last} (and {rundir.best}) to restart the run from step 0"

    def read_state(self) -> dict | None:
        """last/state.json, checked for consistency with the config; None for a fresh run."""
        state = self.rd.read_state()
        if state is None:
            return None
        step, best = state.get("step"), state.get("best") or {}
        problem = None
        if not isinstance(step, int) or not 0 < step <= self.cfg.steps:
            problem = f"step {step!r} is not in 1..steps={self.cfg.steps}"
        elif best.get("step") is not None and not 0 <= best["step"] <= step:  # 0: the init (siamese warm start)
            problem = f"best step {best['step']} is after the last step {step}"
        if problem:
            raise CheckpointError(f"{self.rd.state_path}: {problem}; {self.remedy}")
        return state

    def _optimizer_state(self, opt) -> dict[str, torch.Tensor]:
        """AdamW state as flat tensors (safetensors, not pickles)."""
        out = {}
        for i, p in enumerate(optimizer_params(opt)):
            for k, v in opt.state.get(p, {}).items():
                out[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        return out

    def _load_optimizer(self, opt, path) -> None:
        state, params = read_tensors(path, self.remedy), optimizer_params(opt)
        # A parameter that never got a gradient (e.g. BERT's unused pooler under ft) has no state.
        has_state = {key.split(".", 1)[0] for key in state}
        expected = {f"{i}.{k}": (torch.empty(()) if k == "step" else p) for i, p in enumerate(params)
                    if str(i) in has_state for k in ("step", "exp_avg", "exp_avg_sq")}
        check_state(state, expected, path, self.remedy)
        for key, v in state.items():
            i, k = key.split(".", 1)
            opt.state[params[int(i)]][k] = v.to(params[int(i)].device) if k != "step" else v

    def load_last(self, model, opt, device) -> tuple[int, dict]:
        """Restore model, optimizer and RNG from last/; returns (step, best)."""
        state = self.read_state()
        last = self.rd.last
        saved = state.get("precision")  # `auto` resolves per machine: a resume must not switch mid-run
        if saved is not None and saved != getattr(model, "precision", saved):
            raise CheckpointError(f"{self.rd.state_path}: the run trained in {saved}; here precision={self.cfg.precision} "
                                  f"is {model.precision}. Resume where it ran, or delete {self.rd.last} to restart")
        threads = state.get("threads")  # not in the identity (speed only), but it changes float sums
        if threads is not None and threads != torch.get_num_threads():
            print(f"ept train: warning: resuming with {torch.get_num_threads()} thread(s); the run trained with "
                  f"{threads}: float sums round differently, so the results will differ slightly from an "
                  f"uninterrupted run. Bit-identical resume needs the same --threads")
        load_state(model, last / LAST_METHOD, self.remedy)
        self._load_optimizer(opt, last / LAST_OPTIMIZER)
        rng = read_tensors(last / LAST_RNG, self.remedy)
        if "cpu" not in rng:
            raise CheckpointError(f"{last / LAST_RNG}: no 'cpu' generator state; {self.remedy}")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        if state["best"].get("step") is not None:  # fail now, not after training
            check_state(read_tensors(self.rd.best / LAST_METHOD, self.remedy), trainable_state(model),
                        self.rd.best / LAST_METHOD, self.remedy)
        # last: each file is whole (checked above, with the specific message); are they one checkpoint?
        check_last(self.rd.path, state, self.remedy)
        self.best_digest = (state.get("files") or {}).get(f"{self.rd.best.name}/{LAST_METHOD}")
        return state["step"], state["best"]

    def save_last(self, model, opt, device, step: int, best: dict) -> None:
        last = self.rd.last
        atomic_save_tensors(last / LAST_METHOD, trainable_state(model))
        atomic_save_tensors(last / LAST_OPTIMIZER, self._optimizer_state(opt))
        rng = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":  # dropout on the GPU draws from the device's generator
            rng["cuda"] = torch.cuda.get_rng_state(device)
        atomic_save_tensors(last / LAST_RNG, rng)
        # what a resume reads: last/'s three files (just written: read back from the page cache) and best/'s weights
        files = {f"{last.name}/{name}": file_digest(last / name) for name in LAST_FILES}
        if best.get("step") is not None:
            self.best_digest = self.best_digest or file_digest(self.rd.best / LAST_METHOD)  # a run from before digests
            files[f"{self.rd.best.name}/{LAST_METHOD}"] = self.best_digest
        # state.json last: it is what says the checkpoint is complete, and which files make it up.
        atomic_write_json(last / STATE, {"step": step, "best": best, "config_hash": self.cfg_hash,
                                         "precision": getattr(model, "precision", "fp32"),
                                         "threads": torch.get_num_threads(), "files": files})

    def save_best(self, model, step: int) -> None:
        # the precision it was validated in: `ept export` records it and `ept serve` computes in it
        save_method(model, self.rd.best, self.cfg.backbone, {"step": step, "task": self.cfg.task,
                                                             "template": self.cfg.template, **task_meta(self.cfg),
                                                             "precision": getattr(model, "precision", "fp32")})
        self.best_digest = file_digest(self.rd.best / LAST_METHOD)

    @contextlib.contextmanager
    def best_state(self, model):
        """The model holds best/'s state inside the block, its own state again after it."""
        final = {k: v.detach().clone() for k, v in trainable_state(model).items()}
        load_state(model, self.rd.best / LAST_METHOD, self.remedy)
        try:
            yield model
        finally:
            model.load_state_dict(final, strict=False)

    @property
    def cfg_hash(self) -> str:
        return config_hash(identity(self.cfg.to_dict()))
