"""`TrainConfig`: everything a training run depends on, apart from the torch code (`ept.training.recipe`)
so that `ept --help`, config files and sweep specs are read and validated without torch.

Types come from the annotations and ranges from the field metadata (`ept.flags`): the CLI, a
YAML/JSON `--config` file and a sweep spec go through the same checks and messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from ept.flags import validate
from ept.method_configs import EPTConfig, MethodConfig, drop_legacy, method_config

PAPER_STEPS = 30_000  # the paper's budget on GPU; CPU defaults below are recorded in every run
# The prompt lr of siamese pair tasks on an encoder (docs/tasks.md, "Learning rate"). The frozen
# sentence-embedding model already scores these tasks (STS-B Pearson 0.87 zero-shot), and AdamW
# moves every trainable coordinate by ~lr per step whatever the gradient: at the paper's 0.3 the
# first step alone is ~5x MiniLM's embedding scale (coordinate std 0.056), EPT's mu_t jumps
# 0.3 -> 400, and the run never recovers the zero-shot score. Chosen on STS-B validation.
PAIR_PROMPT_LR = 0.003
SCHEDULERS = ("constant", "linear")


@dataclass
class TrainConfig:
    """Everything a run depends on; the resolved copy is written to RUN/config.json."""

    task: str = field(default="sst2", metadata={"help": "task name (ept ls) or a task file (.yaml/.json; README \"Your own task\")"})
    # The typed method config (`ept.method_configs`): `TrainConfig(method=EPTConfig(hidden_size=5))`,
    # or a registry name (`method="ept*"`). In files and config.json it is `method: NAME` plus
    # `method_options: {switches that differ from the method's defaults}` (`to_dict`, `from_dict`).
    method: MethodConfig = field(default_factory=EPTConfig, metadata={
        "help": "pt | ptuning | resprompt | ept | ept_star | ft | lora | ia3"})
    backbone: str = field(default="minilm", metadata={"help": "minilm | t5-small | t5-base | t5-large | a model folder or hub id"})
    steps: int = field(default=400, metadata={"help": f"optimizer steps (paper: {PAPER_STEPS})", "min": 1})
    lr: float | None = field(default=None, metadata={
        "help": f"learning rate; default 0.3 for prompts ({PAIR_PROMPT_LR:g} on siamese pair tasks), 1e-5 for ft, "
                "1e-3 for lora/ia3", "gt": 0, "unset": "the method's default"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay", "min": 0})
    batch_size: int = field(default=16, metadata={"help": "global batch size (split over processes)", "min": 1})
    eval_every: int = field(default=100, metadata={"help": "steps between validation runs and checkpoints (paper: 1000)", "min": 1})
    checkpoint_every: int | None = field(default=None, metadata={
        "help": "steps between resume checkpoints (last/) besides those at each evaluation: a slow run "
                "killed between evaluations loses at most this many steps. Not in the run's identity", "min": 1,
        "unset": "eval_every"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size", "min": 1})
    max_eval_examples: int | None = field(default=None, metadata={
        "help": "cap validation/test size (CPU budgets); None = all", "min": 1, "unset": "all examples"})
    max_length: int | None = field(default=None, metadata={
        "help": "max input tokens; None = the task's (256/348/512)", "min": 1, "unset": "the task's default"})
    few_shot: int | None = field(default=None, metadata={
        "help": "k training examples per class (4, 16, 32)", "min": 1, "unset": "the full training set"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order and dropout", "min": 0})
    split_seed: int = field(default=42, metadata={"help": "seed of the split protocol (paper/DePT: 42)", "min": 0})
    eval_mode: Literal["rank", "generate"] | None = field(default=None, metadata={"help": "seq2seq: rank | generate"})
    # ---- how a task is put to the model (issue 19; docs/tasks.md, "Templates")
    template: str = field(default="t5", metadata={
        "help": "the task's input template: t5 (the paper's text-to-text one) | natural (written for "
                "decoder-only LMs) | any other the task names (`ept data describe TASK`)"})
    label_score_eos: bool = field(default=True, metadata={
        "help": "decoder-only rank scoring: a label's score includes log p(EOS | label) (true, the trained "
                "target) or not (false, lm-evaluation-harness's choice scoring)"})
    sink_token: str | None = field(default=None, metadata={
        "help": "decoder-only, tokenizer without BOS (SmolLM2): this token (e.g. <|endoftext|>) goes before "
                "the prompt, so the prompt does not sit in the attention-sink slot", "unset": "none"})
    linear_head: bool = field(default=False, metadata={"help": "encoder: trainable linear head instead of label scoring"})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={
        "help": "backbone dtype: float32 | bfloat16 | float16 (prompt stays fp32)"})
    # ---- speed (issue 13; ept.precision): how fast, not what is computed (threads/compile/fallback
    # are left out of a run's identity; precision and group_by_length change the numbers and are in it)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={
        "help": "compute precision; auto = bf16 on hardware with fast bf16 (CUDA bf16, CPU AMX/AVX512-BF16) "
                "for pre-LN backbones (causal, seq2seq), else fp32. Prompt and optimizer state stay fp32"})
    precision_fallback: bool = field(default=False, metadata={
        "help": "true: an explicit bf16/fp16 on hardware without it falls back to fp32 with a warning, not an error"})
    threads: int = field(default=1, metadata={
        "help": "torch intra-op CPU threads; 0 = torch's default (all cores). 1 by default: on a shared 2-core "
                "machine 2 threads measured 5.6-6.6x slower (benchmarks/RESULTS.md §7b)", "min": 0})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the backbone (falls back to eager with a warning if compiling fails)"})
    group_by_length: bool = field(default=False, metadata={
        "help": "training batches of similar length: each window of 50 steps holds the same rows as without, "
                "sorted by length into batches (less padding)"})
    data_dir: str | None = field(default=None, metadata={"help": "local task data (default $EPT_DATA_DIR or ../shared/data)"})
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/<task>-<method>-<backbone>-s<seed>)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard logs to RUN/tb"})
    # Trainer defaults (issue 10) and run identity (issue 14). Today's behaviour is the default so
    # CPU results stay comparable; the HF Trainer's values are linear / 0 / 1.0 / false.
    lr_scheduler: Literal["constant", "linear"] = field(default="constant", metadata={
        "help": "constant | linear (decay to 0 at the last step, HF Trainer)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps before the schedule (HF Trainer: 0)", "min": 0})
    max_grad_norm: float | None = field(default=None, metadata={
        "help": "clip the gradient norm to this; None = no clipping (HF Trainer: 1.0)", "gt": 0, "unset": "no clipping"})
    decay_norm_and_bias: bool = field(default=True, metadata={"help": "weight decay on biases and LayerNorm weights too (HF Trainer: false)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a run folder that holds a run of a different config"})
    # ---- sentence pairs on an encoder backbone (h-pair; see ept.heads.PairHead, docs/tasks.md)
    pair_encoding: Literal["siamese", "cross"] = field(default="siamese", metadata={
        "help": "pair tasks on an encoder: siamese (each side pooled apart, scored by cosine) | cross (joint [SEP] encoding)"})
    pair_head: Literal["trainable", "fixed"] = field(default="trainable", metadata={
        "help": "siamese: trainable (threshold + temperature / per-label anchors, counted) | fixed (fitted on training data, 0 trainable)"})
    pair_fit_examples: int = field(default=512, metadata={
        "help": "siamese: training pairs used to fit the head's threshold/anchors at setup", "min": 2})
    # ---- a task file (README "Your own task"): its parsed content and where it was read, set from
    # `task: FILE`; config.json keeps both, so a run never re-reads the file. The identity hashes
    # what the content means and ignores the path (`ept.training.rundir.identity`).
    task_spec: dict | None = field(default=None, metadata={"help": "a task file's content (from --task FILE)"})
    task_file: str | None = field(default=None, metadata={"help": "the task file it was read from"})

    def __post_init__(self):
        from ept.tasks import TASKS
        from ept.tasks.taskfile import is_task_file, read_task_file, stored_spec

        if isinstance(self.method, str):
            self.method = method_config(self.method)  # `ept*` -> EPTStarConfig()
        if not isinstance(self.method, MethodConfig):
            raise ValueError(f"method={self.method!r}: expected a method name (`ept ls`) or a method config")
        validate(self)  # types and ranges of every field (the method config validated itself)
        if is_task_file(self.task):  # run names and results use the file's task name
            tf = read_task_file(self.task)
            self.task, self.task_spec, self.task_file, self._spec = tf.spec.name, tf.content, str(tf.path), tf.spec
        elif self.task_spec is not None:  # config.json of a task-file run
            self._spec = stored_spec(self.task, self.task_spec, self.task_file)
        else:
            self.task = TASKS.canonical(self.task)  # `CB` -> `cb`: run names and results use the registry's name
            self._spec = None
        self.spec.with_template(self.template)  # an unknown template name lists the task's
        check_backbone(self.backbone)
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps}: must be < steps={self.steps}")
        if self.lr is None:
            self.lr = PAIR_PROMPT_LR if siamese_prompt_run(self) else self.method.default_lr
        low = {"bfloat16": "bf16", "float16": "fp16"}.get(self.dtype)
        if low and self.precision not in ("auto", low):
            raise ValueError(f"precision={self.precision} contradicts dtype={self.dtype}; leave dtype at float32 "
                             f"(precision bf16/fp16 casts a frozen backbone itself)")

    @property
    def spec(self):
        """The task's TaskSpec (a task file's, or the registered one)."""
        from ept.tasks import get_task

        return self._spec or get_task(self.task)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        name = f"{self.task}-{self.method.name}-{Path(self.backbone).name}-s{self.seed}"
        return Path("runs") / name

    @classmethod
    def keys(cls) -> set[str]:
        """The keys of a config file, a sweep spec and config.json."""
        return {f.name for f in fields(cls)} | {"method_options"}

    def to_dict(self) -> dict:
        """The JSON form (RUN/config.json, the identity hash): the fields in order, `method` as its
        name and `method_options` after `backbone`: the same keys and values as before the method
        became typed, so existing run folders keep their identity."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.name if f.name == "method" else value
            if f.name == "backbone":
                out["method_options"] = self.method.options()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a config file, a sweep run or config.json: `method` a name (or a method config),
        `method_options` its switches (typed and range-checked by the method's config)."""
        allowed = cls.keys()
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        d = dict(d)
        options = d.pop("method_options", None) or {}
        if not isinstance(options, dict):
            raise ValueError(f"method_options={options!r}: expected a mapping of method switches, e.g. {{hidden_size: 5}}")
        method = d.get("method", "ept")
        if isinstance(method, MethodConfig):
            options, method = {**method.options(), **options}, method.name
        if not isinstance(method, str):
            raise ValueError(f"method={method!r}: expected a method name (`ept ls`)")
        d["method"] = method_config(method, **drop_legacy(method, options))
        return cls(**d)

    @classmethod
    def defaults(cls) -> dict:
        """`to_dict()` of the defaults, without validating them (a config.json written before a
        field existed lacks it; the identity check fills it in)."""
        from dataclasses import MISSING

        out = {}
        for f in fields(cls):
            value = f.default if f.default is not MISSING else f.default_factory()
            out[f.name] = value.name if f.name == "method" else value
            if f.name == "backbone":
                out["method_options"] = {}
        return out


def task_meta(cfg: TrainConfig) -> dict:
    """What a saved method and an export keep of the task beyond its name: a task file's content,
    the template and the label scoring it was trained with (so `ept serve` renders and scores rows
    as training did, with the task's own fields, template and label words; no --labels needed)."""
    meta = {"task_spec": cfg.task_spec} if cfg.task_spec is not None else {}
    if cfg.template != "t5":
        meta["template"] = cfg.template
    if not cfg.label_score_eos:
        meta["label_score_eos"] = False
    return meta


def canonical_options(method: str, options: dict) -> dict:
    """`method_options` as `to_dict` writes them today: typed, defaults dropped, the prompt fields
    of an older ft/lora/ia3 config.json gone. Unreadable ones (an unknown method) stay as they are."""
    try:
        return method_config(method, **drop_legacy(method, options)).options()
    except (KeyError, ValueError, TypeError):
        return options


def siamese_prompt_run(cfg: TrainConfig) -> bool:
    """Does this run train a prompt for a siamese pair task on an encoder (`ept.heads.resolve_pair_encoding`)?
    Reads the backbone's kind only in that case (a registry fact or the folder's config)."""
    from ept.backbone_specs import offline_kind
    from ept.tasks.spec import siamese_applies

    if not (cfg.method.has_prompt and cfg.pair_encoding == "siamese"):
        return False
    return siamese_applies(offline_kind(cfg.backbone), cfg.spec, cfg.pair_encoding)


def check_backbone(name: str) -> None:
    """A backbone spelled as a path ("/x", "./x", "~/x") must be a folder; registry names and hub
    ids (`org/model`) are checked when loaded."""
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"backbone {name!r}: no such model folder; allowed: a registered backbone "
                                "(`ept ls`), a local model folder or a hub id")


def check_out_dir(path, flag: str = "--out", create: bool = False) -> Path:
    """An output folder that exists as a folder, or can be created, and is writable: fails now
    with the path named, not after the backbone has loaded or a run has trained for an hour.
    `create` makes it (the caller writes into it anyway)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file; expected a folder (existing or to be created)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: cannot create the folder, {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is not writable")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"{flag} {str(path)!r}: cannot create the folder ({err.strerror})") from None
    return path
