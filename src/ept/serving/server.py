"""Mixed-task serving: one frozen backbone, many task prompts, rows of different tasks in ONE batch.

    from ept.serving.server import MultiTaskServer
    server = MultiTaskServer(*load_backbone("minilm"))
    server.add_task("sst2", "runs/sst2-ept/export", get_task("sst2"))
    server.add_task("rte", "runs/rte-pt/export", label_words=("entailment", "not_entailment"))
    server.score([{"task": "sst2", "text": "a gem"},
                  {"task": "rte", "inputs": {"sentence1": "A man sleeps.", "sentence2": "He is awake."}}])

An EPT task is one vector (paper Section 3.3), so what tells tasks apart is the few input
positions in front of each row. PEFT can only switch the active prompt adapter between batches
(peft `PeftModel.get_prompt` uses the active adapter; `adapter_names` mixes only injected tuners such as LoRA, peft PR #1558); here every row carries its own prompt. The pieces, each small:

- `PromptBank` (ept.serving.bank): the prompts of all served tasks; `bank(task_ids)` gives a batch its
  rows' prompts, left-padded, and their mask.
- `TaskRegistry` (here): name -> `ServedTask` (spec, scorer, mode, max length) plus the bank;
  add, replace and remove at any time (the HTTP server's hot reload).
- `parse_row` (here): one input row -> the segments to tokenise, or a `RowError` naming the row.
- The backbone's kind (ept.kinds): encodes the rows as training does and scores one backbone
  pass of rows of many tasks (`Kind.serve`) with the very functions training calls for one task.

Scores and predictions equal those of each task's own scorer (`ept.heads.make_scorer`) on a
single-task batch, up to float summation order (tests/test_serve.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from ept.backbones import PromptedModel
from ept.serving.bank import PromptBank
from ept.batching import collate, encoder_segments, to_device
from ept.checkpoint import load_exported
from ept.heads import make_scorer
from ept.kinds import KINDS
from ept.kinds.base import RowError  # noqa: F401  (re-exported: one unusable input row)
from ept.tasks.spec import Example, pair_sides

MAX_LENGTH = 256  # paper Appendix B.2; a task spec's own max_length wins


class TaskNotServed(RowError, KeyError):
    """A row or a call names a task that is not served (never served, or removed meanwhile): the
    HTTP layer answers 404 by this type, not by the message text. A KeyError too, for callers
    that look tasks up like a dict."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class LabelSpec:
    """A task known only by its label words (or regression anchors): what `make_scorer` reads."""

    name: str
    kind: str = "classification"  # classification | regression | generation
    label_words: tuple[str, ...] = ()
    anchor_words: tuple[str, ...] = ()  # encoder regression: texts for (min, max)
    value_range: tuple[float, ...] = ()  # regression: (lo, hi)
    max_length: int = MAX_LENGTH

    def __post_init__(self):
        if self.kind not in ("classification", "regression", "generation"):
            raise ValueError(f"task {self.name!r}: kind={self.kind!r}; allowed: classification, regression, generation")
        if self.kind == "classification" and len(self.label_words) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs at least 2 label words, got {self.label_words!r}")
        for word in (*self.label_words, *self.anchor_words):
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"task {self.name!r}: label words must be non-empty strings, got {word!r} in {self.label_words!r}")
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"task {self.name!r}: label words repeat: {self.label_words!r}")


@dataclass
class ServedTask:
    name: str
    spec: Any
    scorer: Any  # the task's own scorer: eval mode, label ids, max_new_tokens come from it
    prompt: torch.Tensor  # P' (n, e), fp32, as held by the bank ([e(sink); P'] behind a sink token: `_behind_sink`)
    mode: str  # "embed" | "siamese" (encoder) | "rank" | "generate" (seq2seq, causal): `Kind.prepare_task`
    max_length: int
    meta: dict = field(default_factory=dict)
    # causal: keys/values of [BOS][P'] (ept.kinds.causal.CausalKind), computed when the task is added
    # and held in the capped LRU (ept.kinds.prefixcache): None once evicted (recomputed on next use);
    # they live and die with this task, so a replaced or removed task drops its cache
    prefix_kv: torch.Tensor | None = None
    cache_state: str | None = None  # cached | evicted | over cap | uncacheable; None: no prompt cache
    # Siamese pair exports (mode "siamese"): the export's pair head (its scalars loaded) and the
    # pooling recipe it was trained with; each side is prompted and pooled on its own.
    pair_head: Any = None
    pooling: Any = None

    def describe(self) -> dict:
        """What `GET /v1/prompts` shows (with the server's precision, `MultiTaskServer.describe`)."""
        return {"name": self.name, "method": self.meta.get("method"), "backbone": self.meta.get("backbone"),
                "kind": self.spec.kind, "mode": self.mode,
                "num_tokens": int(self.meta.get("num_tokens") or self.prompt.shape[0]),  # P' alone, without a sink token
                "sink_token": self.meta.get("sink_token"),
                "embed_dim": int(self.prompt.shape[1]), "label_words": list(getattr(self.spec, "label_words", ()) or ()),
                "validated_precision": self.meta.get("precision"), "cache": self.cache_state}


class TaskRegistry:
    """The served tasks by name, and their prompts in one `PromptBank`. Not thread-safe: the HTTP
    server changes it only under its lock, between backbone passes."""

    def __init__(self, embed_dim: int):
        self.bank = PromptBank(embed_dim)
        self.tasks: dict[str, ServedTask] = {}

    def put(self, task: ServedTask, replace: bool = False) -> None:
        self.bank.add(task.name, task.prompt, replace=replace)
        task.prompt = self.bank.get(task.name)
        self.tasks[task.name] = task

    def remove(self, name: str) -> ServedTask:
        self.get(name)
        self.bank.remove(name)
        return self.tasks.pop(name)

    def get(self, name, row: int | None = None) -> ServedTask:
        if not isinstance(name, str) or name not in self.tasks:
            raise TaskNotServed(row, f"task {name!r} is not served; served: {', '.join(self.tasks) or '(none)'}")
        return self.tasks[name]


INPUT_KEYS = ("inputs", "fields", "text", "source")
ONE_INPUT = ('give exactly one of "inputs" (the task\'s fields by name), "fields" (a list in the task\'s field order), '
             '"text" (a one-field task) or "source" (an already formatted input)')


# The shape of a row, checked in one place: `parse_row` here, `ept serve`'s check before any weights
# load (ept.commands.serve) and the HTTP request model's message (ept.serving.http_app.Row).
def row_task(row, i: int):
    """The task a row names (any value: the caller looks it up), once it is an object at all."""
    if not isinstance(row, dict):
        raise RowError(i, f"expected an object with \"task\" and \"inputs\", \"fields\", \"text\" or \"source\", "
                          f"got {type(row).__name__}")
    return row.get("task")


def row_input_key(row: dict, i: int) -> str:
    """Which ONE of INPUT_KEYS a row gives its input by; "text" and "source" must be strings."""
    given = [k for k in INPUT_KEYS if k in row]
    if len(given) != 1:
        raise RowError(i, f"{ONE_INPUT}; got keys {sorted(row)}")
    key = given[0]
    if key in ("text", "source") and not isinstance(row[key], str):
        raise RowError(i, f"\"{key}\" must be a string, got {type(row[key]).__name__} {row[key]!r:.40}")
    return key


def parse_row(row, i: int, registry: TaskRegistry, segment_pairs: bool) -> tuple[ServedTask, str, str | None]:
    """(task, first segment, second segment or None) of one input row, or a RowError naming it.

    A row gives its input ONE way, with one meaning on every backbone kind: "inputs" (the task's
    fields by name), "fields" (the same values in the task's field order) or "text" (a task with
    one input field) are rendered exactly as in training (`TaskSpec.render`: encoders read the
    fields as a [SEP] pair or as siamese sides; seq2seq and causal models the task's template,
    plus the answer cue on causal ones). "source" is an input already formatted by the caller,
    used as it is (seq2seq/causal: the text-to-text source; encoder: the one segment). A task
    served by its label words only (`--labels`) has no field names: "fields"/"text" are its raw
    segments. Values must be strings: a null, list or dict is an error, never scored as "None".
    `segment_pairs`: the backbone's kind reads several fields as [SEP] segments (`Kind.segment_pairs`).
    """
    task = registry.get(row_task(row, i), i)  # TaskNotServed, naming the row
    key = row_input_key(row, i)
    if key == "source":
        if task.mode == "siamese":
            raise RowError(i, f"task {task.name!r} scores sentence pairs: give its two sides in \"fields\" or \"inputs\"")
        return task, row["source"], None
    names = tuple(getattr(task.spec, "fields", ()) or ())
    if not names:  # known by its label words only: the raw segments
        return (task, *_raw_segments(task, key, row[key], i, segment_pairs))
    record = _record(task, names, key, row[key], i)
    try:
        source, fields = task.spec.render(record)
    except (ValueError, KeyError, TypeError, IndexError) as err:  # a preprocessor's extra input, a type
        raise RowError(i, f"task {task.name!r}: {str(err).strip(chr(39))}") from None
    if task.mode == "siamese":
        return (task, *siamese_sides(task, fields, i))
    if segment_pairs:
        return (task, *encoder_segments(fields))
    return task, source, None


def _record(task: ServedTask, names: tuple[str, ...], key: str, value, i: int) -> dict:
    """The row's input as a record of the task's fields (and the extra inputs a preprocessor reads)."""
    if key == "text":
        if len(names) != 1:
            raise RowError(i, f"task {task.name!r} has {len(names)} input fields {list(names)}: give \"inputs\" "
                              f"{{{', '.join(repr(n) + ': ...' for n in names)}}} or \"fields\" (a list in that order)")
        return {names[0]: value}
    extra = tuple(k for k in getattr(task.spec, "extra", ()) if k != getattr(task.spec, "group_key", ""))
    if key == "fields":
        if not isinstance(value, (list, tuple)) or len(value) != len(names):
            raise RowError(i, f"task {task.name!r} has fields {list(names)}: \"fields\" must list {len(names)} "
                              f"string(s) in that order, got {value!r:.80}")
        if extra:
            raise RowError(i, f"task {task.name!r} also reads {list(extra)}: give \"inputs\" by name")
        value = dict(zip(names, value))
    if not isinstance(value, dict):
        raise RowError(i, f"\"inputs\" must be an object {{field: text}}, got {type(value).__name__} {value!r:.40}")
    missing = [n for n in names + extra if n not in value]
    unknown = [n for n in value if n not in names + extra]
    if missing or unknown:
        raise RowError(i, f"task {task.name!r} reads {list(names + extra)}; "
                          + (f"missing {missing}" if missing else f"unknown {unknown}"))
    for name in names:
        if not isinstance(value[name], str):
            raise RowError(i, f"\"{key}\" {name!r} must be a string, got {type(value[name]).__name__} {value[name]!r:.40}")
    return dict(value)


def _raw_segments(task: ServedTask, key: str, value, i: int, segment_pairs: bool) -> tuple[str, str | None]:
    """A task known by its label words only: "text" is its one segment, "fields" its segments."""
    if key == "text":
        return value, None
    if key == "inputs":
        raise RowError(i, f"task {task.name!r} is served by its label words only (no field names): give \"text\" "
                          f"or \"fields\"; an export trained on a task file or a registered task has them")
    if not isinstance(value, (list, tuple)) or not value:
        raise RowError(i, f"\"fields\" must be a non-empty list of strings, got {value!r:.40}")
    for j, v in enumerate(value):
        if not isinstance(v, str):
            raise RowError(i, f"\"fields\"[{j}] must be a string, got {type(v).__name__} {v!r:.40}")
    if task.mode == "siamese":
        return siamese_sides(task, value, i)
    return encoder_segments(value) if segment_pairs else (" ".join(value), None)


def siamese_sides(task: ServedTask, fields, i: int) -> tuple[str, str]:
    """The two sides of a siamese row, as training builds them (`ept.tasks.spec.pair_sides`: WiC's
    word marked, no empty side); a task known only by label words takes exactly two fields."""
    spec = task.spec
    if not getattr(spec, "fields", None):
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise RowError(i, f"task {task.name!r} scores sentence pairs: give \"fields\" with two non-empty texts, got {fields!r:.80}")
        return fields[0], fields[1]
    try:
        return pair_sides(Example(source="", target="", label=None, fields=tuple(fields)), spec, i)
    except ValueError as err:
        raise RowError(i, str(err).replace(f", example {i}", "")) from None


def siamese_parts(name: str, spec, meta: dict, device) -> tuple:
    """(PairHead with the export's scalars, PoolingRecipe) of a siamese export, checked against
    the task it is served as."""
    from ept.heads import PairHead
    from ept.pooling import PoolingRecipe

    head = PairHead.from_meta(meta["pair_head"])
    head.load_state_dict(meta["pair_head_state"])
    labels = tuple(getattr(spec, "label_words", ()) or ())
    if head.kind != "regression" and len(labels) != head.num_labels:
        raise ValueError(f"prompt {name!r}: its pair head scores {head.num_labels} labels, the task has {len(labels)} "
                         f"{list(labels)}; give {head.num_labels} label words")
    if head.kind == "regression" and spec.kind != "regression":
        raise ValueError(f"prompt {name!r}: a regression pair head (STS-B style) served as a {spec.kind} task")
    return head.to(device).eval(), PoolingRecipe(**meta["pooling"])


class MultiTaskServer:
    """Holds one frozen backbone and any number of task prompts; scores mixed-task batches.

    The backbone is put in eval mode and frozen. Tasks: `add_task` / `remove_task`. Rows: dicts
    with "task" and one of "inputs" (the task's fields by name), "fields" (a list in the task's
    field order), "text" (a one-field task) or "source" (an already formatted input), rendered
    as in training on every backbone kind (`parse_row`).
    """

    def __init__(self, backbone, tokenizer, max_length: int | None = None, prefix_cache: bool = True,
                 prefix_cache_mb: float | None = None, warn=None):
        """prefix_cache (causal backbones): compute each task's prompt keys/values once, when it is
        added, and run only the inputs per pass; False recomputes them in every pass.
        prefix_cache_mb: the most MiB those caches hold, least recently used evicted (default: a
        quarter of the machine's memory, ept.kinds.prefixcache). The backbone computes in its own dtype
        (`precision`); `build_server` casts it to the serving precision."""
        from ept.precision import DTYPE_NAMES

        backbone.eval()
        self.model = PromptedModel(backbone, tokenizer, None)  # no prompt of its own: the bank's, per row
        self.model.eval()
        self.tokenizer, self.kind, self.max_length = tokenizer, self.model.kind, max_length
        self.device = next(backbone.parameters()).device
        self.registry = TaskRegistry(self.model.embed_dim)
        self.registry.bank.to(self.device)
        # the kind's own serving pass (`Kind.serve`), with its per-task caches (causal: a capped LRU)
        cap = None if prefix_cache_mb is None else int(prefix_cache_mb * 2**20)
        self.kind_ops = KINDS.get(self.kind)(self.model, prefix_cache=prefix_cache, prefix_cache_bytes=cap, warn=warn)
        self.precision = DTYPE_NAMES.get(str(next(backbone.parameters()).dtype).removeprefix("torch."), "fp32")

    @property
    def prefix_cache(self):
        """The causal prompt-KV LRU (ept.kinds.prefixcache), or None."""
        return self.kind_ops.cache

    def describe(self, name: str) -> dict:
        """One served task as `GET /v1/prompts` shows it: method, backbone, the precision this
        server computes in and the one the run validated in, the prompt cache's state."""
        return {**self.tasks[name].describe(), "precision": self.precision}

    @property
    def tasks(self) -> dict[str, ServedTask]:
        return self.registry.tasks

    @property
    def bank(self) -> PromptBank:
        return self.registry.bank

    # ------------------------------------------------------------------ tasks
    def add_task(self, name: str, prompt: torch.Tensor | str | Path, spec=None, *, label_words=None,
                 kind: str = "classification", eval_mode: str | None = None, replace: bool = False,
                 meta: dict | None = None) -> ServedTask:
        """Serve `name` with `prompt`: a P' tensor (n, e) or an `ept export` folder.

        `spec` is a TaskSpec (or anything with name/kind/label_words); without one, `label_words`
        (and `kind`) describe the task. `eval_mode` (seq2seq): rank | generate. `replace` swaps an
        already served task (its next batch uses the new prompt). `meta`: the export's metadata
        when `prompt` is a tensor read from an export (`load_exported`); a siamese export's says
        how it scores pairs (pair head, pooling), and its rows are scored that way.
        """
        if name in self.tasks and not replace:
            raise ValueError(f"task {name!r} is already served; served: {', '.join(self.tasks)}")
        meta = dict(meta or {})
        if not torch.is_tensor(prompt):
            prompt, meta = load_exported(prompt)
        if spec is None:
            if not label_words and kind != "generation":
                raise ValueError(f"task {name!r}: give a task spec or its label_words")
            spec = LabelSpec(name, kind, tuple(label_words or ()))
        if meta.get("sink_token"):
            prompt = self._behind_sink(name, prompt, meta["sink_token"])
        head = pooling = None
        if meta.get("pair_encoding") == "siamese":
            if not self.kind_ops.segment_pairs:
                raise ValueError(f"prompt {name!r} scores pairs siamese, which needs an encoder backbone, not {self.kind}")
            head, pooling = siamese_parts(name, spec, meta, self.device)
            scorer = None  # the pair head scores; the shared model never gets a head attached
        else:
            scorer = make_scorer(self.model, spec, eval_mode, label_score_eos=meta.get("label_score_eos", True))
        max_length = self.max_length or getattr(spec, "max_length", None) or MAX_LENGTH
        prompt = PromptBank.check(name, prompt, self.model.embed_dim)  # shape / NaN check before any label pass
        task = ServedTask(name, spec, scorer, prompt, "", max_length, meta, pair_head=head, pooling=pooling)
        task.mode = self.kind_ops.prepare_task(task)  # label embeddings / ids, computed once, now
        self.registry.put(task, replace=replace)
        return task

    def _behind_sink(self, name: str, prompt: torch.Tensor, token: str) -> torch.Tensor:
        """A prompt trained behind a sink token (`--sink-token`: rows ran as [sink][P'][x]) is served
        as the prompt [e(sink); P']. The shared model puts nothing before a row's prompt (a sink
        token is only allowed where the tokenizer adds no BOS), so each row gets its training
        layout and positions exactly, beside tasks without one, and the prompt KV cache covers the
        sink token too. Refused, naming the prompt, where the sink token could not have been trained."""
        try:
            sink = self.model.sink_id(token)
        except ValueError as err:
            raise ValueError(f"prompt {name!r} was trained behind a sink token, which this backbone cannot serve: {err}") from None
        return torch.cat([self.model.token_embedding(sink).to(prompt.device), prompt.float()])

    def remove_task(self, name: str) -> ServedTask:
        task = self.registry.remove(name)
        self.kind_ops.forget(name)
        return task

    # ------------------------------------------------------------------ rows -> features
    def prepare(self, rows: Iterable[dict]) -> list[dict]:
        """Validate and tokenise rows (grouped by max length and single/pair, one tokenizer call
        per group). Each feature names its task; ids are resolved per pass, so a feature stays
        valid while other tasks are added or removed."""
        rows = list(rows)
        parsed = [parse_row(r, i, self.registry, self.kind_ops.segment_pairs) for i, r in enumerate(rows)]
        features: list[dict | None] = [None] * len(rows)
        groups: dict[tuple[int, str, str], list[int]] = {}
        for i, (task, _, second) in enumerate(parsed):
            shape = "siamese" if task.mode == "siamese" else "pair" if second is not None else "single"
            groups.setdefault((task.max_length, shape, answer_cue(task)), []).append(i)
        for (max_length, shape, cue), idx in groups.items():
            firsts, seconds = [parsed[i][1] for i in idx], [parsed[i][2] for i in idx]
            if shape == "siamese":  # each side its own [CLS] side [SEP], as training encodes it
                sides = zip(self._tokenize(firsts, None, max_length), self._tokenize(seconds, None, max_length))
                feats = [{"a": a, "b": b} for a, b in sides]
            else:
                spec = parsed[idx[0]][0].spec  # the group's tasks share one answer cue
                feats = self._tokenize(firsts, seconds if shape == "pair" else None, max_length, spec)
            for i, f in zip(idx, feats):
                f.update(labels=None, index=i, task=parsed[i][0].name)
                features[i] = f
        return features

    def _tokenize(self, firsts: list[str], seconds: list[str] | None, max_length: int, spec=None) -> list[dict]:
        """Rows through their backbone kind's encoding (`Kind.encode`), exactly as training encodes
        them: an encoder reads a [SEP] pair, seq2seq the source, causal the source + the answer cue
        of the task's template (`spec.answer_cue`; the default without one)."""
        rows = [Example(source=f if s is None else f"{f} {s}", target="", label=None,
                        fields=(f,) if s is None else (f, s)) for f, s in zip(firsts, seconds or [None] * len(firsts))]
        return self.kind_ops.encode(self.tokenizer, rows, max_length, spec, count_truncated=False).features

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def predict(self, features: list[dict], batch_size: int | None = None) -> list[dict]:
        """Score pre-tokenised rows (from `prepare`); one result dict per row, in input order.

        batch_size None: ONE backbone pass over all rows, whatever their tasks. Otherwise rows
        are sorted by (prompt length, input length) and cut into passes of `batch_size` rows, each
        still mixing tasks: a pass is as wide as its longest prompt plus its longest input, and
        padding, not the number of passes, is what costs on a CPU.
        """
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; must be at least 1")
        if batch_size is None or batch_size >= len(features):
            return self.predict_pass(features)
        n = [self.registry.get(f["task"]).prompt.shape[0] for f in features]
        order = sorted(range(len(features)), key=lambda i: (-n[i], -input_length(features[i])))
        out: list[dict | None] = [None] * len(features)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, r in zip(chunk, self.predict_pass([features[i] for i in chunk])):
                out[i] = r
        return out

    def score(self, rows: Iterable[dict], batch_size: int = 64, sort_by_length: bool = True) -> list[dict]:
        """Tokenise and score rows of any mix of tasks, `batch_size` rows per backbone pass
        (rows of similar length together when sort_by_length; results in input order)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; must be at least 1")
        features = self.prepare(rows)
        if sort_by_length:
            return self.predict(features, batch_size)
        out: list[dict] = []
        for start in range(0, len(features), batch_size):
            out.extend(self.predict_pass(features[start:start + batch_size]))
        return out

    @torch.inference_mode()
    def predict_pass(self, features: list[dict]) -> list[dict]:
        """One backbone pass (per mode) over rows of any mix of tasks."""
        if not features:
            return []
        tasks = [self.registry.get(f["task"]) for f in features]
        return self.kind_ops.serve(self, features, tasks)

    def inputs(self, features: list[dict], tasks: list[ServedTask]):
        """Padded inputs plus the rows' prompts (B, n_b, e) and prompt mask (B, n_b) from the bank."""
        prompt, mask = self.bank(self.bank.ids([t.name for t in tasks]))
        return self.collate(features), prompt, mask

    def collate(self, features: list[dict]) -> dict:
        """The rows' padded inputs, without prompts, on the backbone's device."""
        plain = [{k: v for k, v in f.items() if k != "task"} for f in features]
        return to_device(collate(self.tokenizer, plain), self.device)


def answer_cue(task: ServedTask) -> str | None:
    """The cue a causal model reads after this task's input: its template's (None: the default)."""
    return getattr(task.spec, "answer_cue", None)


def input_length(feature: dict) -> int:
    """Tokens of a row (a siamese row: its longer side)."""
    if "a" in feature:
        return max(len(feature["a"]["input_ids"]), len(feature["b"]["input_ids"]))
    return len(feature["input_ids"])


# ---------------------------------------------------------------------- loading served prompts
def spec_for(name: str, meta: dict, label_words=None):
    """The task spec of a served prompt: its label words when given (checked against the label
    count the export records), else the task the export was trained on (a task file's content
    travels in the export; a registered task by its name), else the registered task called NAME."""
    try:
        from ept.tasks import get_task
    except ImportError:  # a serving-only install without the task catalog
        get_task = None

    def registered(task, template=None):
        try:
            return get_task(task).with_template(template) if get_task is not None and task else None
        except (KeyError, ValueError):
            return None

    if meta.get("task_spec") is not None:  # trained on a task file: the export carries its content
        from ept.tasks.taskfile import stored_spec

        trained = stored_spec(meta.get("task"), meta["task_spec"]).with_template(meta.get("template"))
    else:
        trained = registered(meta.get("task"), meta.get("template"))  # a template's label words, not the T5 ones
    kind = meta.get("task_kind") or (trained.kind if trained is not None else None)
    recorded = tuple(meta.get("label_words") or ())  # what the export says it was trained with
    expected = meta.get("num_labels") or (len(trained.label_words) if trained is not None and trained.label_words else None)
    if label_words is not None:
        words = tuple(w.strip() if isinstance(w, str) else w for w in label_words)
        if kind not in (None, "classification"):
            raise ValueError(f"prompt {name!r}: the export was trained on {meta.get('task')!r}, a {kind} task; "
                             f"label words do not apply (drop --labels / \"labels\")")
        if expected and len(words) != expected:
            raise ValueError(f"prompt {name!r}: {len(words)} label words {list(words)}, but the export was trained "
                             f"with {expected} labels ({meta.get('task') or 'its task'}); give {expected}")
        return LabelSpec(name, "classification", words)
    spec = trained or (LabelSpec(name, "classification", recorded) if recorded and kind == "classification" else None) \
        or registered(name)
    if spec is None:
        raise ValueError(f"prompt {name!r}: no label words; pass --labels {name}=word,word,... or name a registered task (ept ls)")
    return spec


def find_exports(prompts: dict[str, str] | None = None, prompts_dir: str | None = None) -> dict[str, Path]:
    """NAME -> export folder: the explicit NAME=DIR pairs plus, from `prompts_dir`, every
    DIR/NAME/ holding prompt.json (an export) or DIR/NAME/export/ (a run folder's export)."""
    from ept.checkpoint import EXPORT_CONFIG

    found: dict[str, Path] = {}
    if prompts_dir is not None:
        root = Path(prompts_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"--prompts-dir {root}: not a folder")
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in (sub, sub / "export"):
                if (folder / EXPORT_CONFIG).is_file():
                    found[sub.name] = folder
                    break
        if not found:
            raise FileNotFoundError(f"--prompts-dir {root}: no export folders (NAME/{EXPORT_CONFIG} or NAME/export/{EXPORT_CONFIG})")
    for name, folder in (prompts or {}).items():
        if name in found:
            raise ValueError(f"prompt {name!r} is given by --prompt and found in --prompts-dir {prompts_dir}")
        found[name] = Path(folder)
    return found


def load_prompts(folders: dict[str, Path], labels: dict[str, tuple[str, ...]] | None = None):
    """Read every export and resolve its spec, before any weights load: {name: (prompt, meta, spec)}."""
    labels = labels or {}
    unknown = sorted(set(labels) - set(folders))
    if unknown:
        raise ValueError(f"--labels for {unknown} but no prompt of that name; prompts: {', '.join(folders)}")
    loaded = {}
    for name, folder in folders.items():
        prompt, meta = load_exported(folder)
        if not torch.isfinite(prompt).all():
            raise ValueError(f"{folder}: the prompt has NaN/inf values; re-export it from a healthy checkpoint")
        loaded[name] = (prompt, meta, spec_for(name, meta, labels.get(name)))
    return loaded


def serving_precision(metas: list[dict], requested: str | None, device, kind: str, fallback: bool = False,
                      warn=None) -> tuple[str, str]:
    """(precision, why) the served backbone computes in: `requested` (--precision) when given,
    else the precision the exports were validated in (`ept export` records it), else fp32 (exports
    written before it was recorded; what serving always did). A recorded bf16 on hardware without
    fast bf16 falls back to fp32 with a warning: the scores may then differ from the run's."""
    from ept.precision import resolve_precision

    if requested is not None:
        # prompt=True: serving is always soft prompts on a frozen backbone, so `auto` resolves as for a prompt run
        return resolve_precision(requested, device, kind, fallback=fallback, warn=warn, prompt=True), f"--precision {requested}"
    recorded = recorded_precision(metas)
    if recorded is None:
        return "fp32", "the exports record no precision"
    return resolve_precision(recorded, device, kind, fallback=True, warn=warn, prompt=True), "the precision the run validated in"


def recorded_precision(metas: list[dict]) -> str | None:
    """The one precision the exports record (None: none does), or a ValueError if they disagree."""
    recorded = sorted({m["precision"] for m in metas if m.get("precision")})
    if len(recorded) > 1:
        raise ValueError(f"the exports were validated in different precisions {recorded}; one backbone computes in one: "
                         f"pick it with --precision")
    return recorded[0] if recorded else None


def build_server(loaded: dict, backbone: str | None = None, max_length: int | None = None,
                 eval_mode: str | None = None, prefix_cache: bool = True, precision: str | None = None,
                 precision_fallback: bool = False, say=None, prefix_cache_mb: float | None = None) -> MultiTaskServer:
    """Load the backbone the exports name (they must agree) unless `backbone`, cast it to the
    serving precision (`serving_precision`; `say` gets the line that names it), add every prompt."""
    import sys

    from ept.backbones import backbone_kind, load_backbone
    from ept.precision import DTYPES

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if precision is None:
        recorded_precision([meta for _, meta, _ in loaded.values()])  # disagreeing exports fail before weights load
    names = {meta.get("backbone") for _, meta, _ in loaded.values()}
    if backbone is None and len(names) != 1:
        raise ValueError(f"the exports name different backbones {sorted(map(str, names))}; pick one with --backbone")
    model, tokenizer = load_backbone(backbone or names.pop())
    chosen, why = serving_precision([meta for _, meta, _ in loaded.values()], precision, next(model.parameters()).device,
                                    backbone_kind(model.config), precision_fallback,
                                    warn=lambda m: say(f"ept serve: warning: {m}"))
    if chosen != "fp32":
        model.to(DTYPES[chosen])  # frozen: cast once, as training does (ept.precision); prompts stay fp32
    server = MultiTaskServer(model, tokenizer, max_length=max_length, prefix_cache=prefix_cache,
                             prefix_cache_mb=prefix_cache_mb, warn=lambda m: say(f"ept serve: warning: {m}"))
    say(f"ept serve: computing in {chosen} ({why})")
    for name, (prompt, meta, spec) in loaded.items():
        server.add_task(name, prompt, spec, eval_mode=eval_mode, meta=meta)
    return server
