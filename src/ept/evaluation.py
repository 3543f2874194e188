"""Evaluate a finished (or interrupted) run folder's best prompt on any task and split."""

from __future__ import annotations

import torch


def load_run(run_dir, data_dir=None, precision: str | None = None, precision_fallback: bool = False):
    """(TrainConfig, PromptedModel with the best state) of a run folder, in `precision` (default:
    the precision the run trained and was validated in, as results.json records it; a run without
    one, its own setting resolved for this machine; ept.precision). A huge-norm prompt scores
    differently in bf16 and fp32 (docs/results-smollm2.md), so `auto` must not re-decide it here."""
    from ept.checkpoint import load_method
    from ept.training.rundir import RunDir
    from ept.training.recipe import TrainConfig

    rd = RunDir(run_dir)
    data = rd.read_config()
    # A config.json from before siamese pairs reads as `cross` (rundir.LEGACY_DEFAULTS), as at resume.
    cfg = TrainConfig.from_dict(data)
    if not rd.best.exists():
        raise FileNotFoundError(f"{rd.path}: no best/ state yet (the run never reached an evaluation)")
    from ept.backbones import load_backbone

    from ept.precision import apply_precision

    backbone, tokenizer = load_backbone(cfg.backbone, dtype=getattr(torch, cfg.dtype))
    model = load_method(rd.best, backbone, tokenizer)
    recorded = (rd.read_results() or {}).get("precision")
    apply_precision(model, precision or recorded or cfg.precision, cfg.dtype, precision_fallback,
                    warn=lambda m: print(f"ept eval: warning: {m}"))
    return cfg, model


def evaluate_run(run_dir, split: str = "test", task: str | None = None, data_dir=None,
                 max_examples: int | None = None, model=None, cfg=None, precision: str | None = None,
                 precision_fallback: bool = False, threads: int | None = None) -> dict:
    """Metrics of the run's best prompt on `task` (default the run's own) and write them to
    RUN/eval/<task>-<split>.json. Pass `model`/`cfg` to reuse a loaded run. `precision` and
    `threads` as for training (default: the run's precision, torch's threads)."""
    from ept.heads import make_scorer
    from ept.training.rundir import RunDir, atomic_write_json
    from ept.tasks import load_task
    from ept.training.recipe import evaluate

    from ept.precision import set_threads

    set_threads(threads)
    if model is None:
        cfg, model = load_run(run_dir, data_dir, precision, precision_fallback)
    model.eval()
    from ept.tasks.taskfile import resolve_task

    spec = resolve_task(task) if task else cfg.spec  # a name, a task file or a TaskSpec (transfer)
    task = spec.name
    data = load_task(spec, data_dir=data_dir or cfg.data_dir, seed=cfg.split_seed, template=cfg.template)
    examples = split_examples(data, split)[: max_examples or cfg.max_eval_examples]
    scorer = make_scorer(model, data.spec, cfg.eval_mode, pair_encoding=cfg.pair_encoding, pair_head=cfg.pair_head,
                         label_score_eos=cfg.label_score_eos)
    encoded = scorer.encode(examples, cfg.max_length or data.spec.max_length)
    device = next(model.parameters()).device
    if scorer.pair_encoding == "siamese":
        metrics = evaluate_pairs(scorer, encoded, examples, cfg.eval_batch_size, device)
    else:
        metrics = evaluate(scorer, data.spec, model.tokenizer, encoded, examples, cfg.eval_batch_size, device)
    out = {"task": task, "split": split, "examples": len(examples), **metrics}
    atomic_write_json(RunDir(run_dir).eval_output(task, split), out)
    return out


SPLITS = ("test", "validation", "dev")


def split_examples(data, split: str) -> list:
    """A split's examples; "dev" = validation + test, the whole official dev set for the tasks the
    split protocol halves (RTE, MRPC, STS-B, CB, ...: paper Appendix B.1)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {', '.join(SPLITS)}")
    examples = data.validation + data.test if split == "dev" else getattr(data, split)
    if not examples:
        raise ValueError(f"task {data.spec.name!r} has no {split} examples here ({data.source})")
    return examples


def evaluate_pairs(scorer, encoded, examples, batch_size: int, device) -> dict:
    """A siamese scorer's metrics from one pass of cosines, plus, for binary tasks, the accuracy of
    the best threshold on these very rows (`best_threshold_accuracy`: an upper bound, the
    zero-shot table's convention) and the head's threshold."""
    from ept.batching import batches, to_device
    from ept.heads import best_threshold
    from ept.tasks import score

    cos, labels = scorer.cosines(to_device(b, device) for b in batches(scorer.model.tokenizer, encoded, batch_size))
    head = scorer.model.pair_head
    metrics = score(scorer.spec, head.predict(cos.to(device)), examples)
    if head.kind == "binary":
        _, acc = best_threshold(cos, labels == int(head.positive))
        metrics.update(best_threshold_accuracy=100.0 * acc, threshold=head.threshold.item())
    return metrics


def evaluate_zero_shot(task: str, backbone: str = "minilm", split: str = "test", data_dir=None,
                       max_examples: int | None = None, pair_encoding: str = "siamese", fit_examples: int = 512,
                       max_length: int | None = None, batch_size: int = 64, split_seed: int = 42,
                       template: str | None = None, sink_token: str | None = None, label_score_eos: bool = True) -> dict:
    """The frozen backbone with no prompt (`ept eval --no-prompt`): the "none" row. A siamese
    binary head gets its threshold fitted on the first `fit_examples` training pairs (no trained
    weight anywhere); single-sentence tasks use the label-scoring head as usual. On a decoder-only
    backbone a classification task is rank-scored with and without the EOS term; the metrics of
    `label_score_eos` come first, both under "label_score_eos" ({"true": ..., "false": ...})."""
    from ept.backbones import PromptedModel, load_backbone
    from ept.batching import batches
    from ept.heads import make_scorer
    from ept.prompts import method_config
    from ept.tasks import load_task
    from ept.tasks.taskfile import resolve_task
    from ept.training.recipe import evaluate

    data = load_task(resolve_task(task), data_dir=data_dir, seed=split_seed, template=template)
    examples = split_examples(data, split)[:max_examples]
    net, tokenizer = load_backbone(backbone)
    model = PromptedModel(net, tokenizer, method_config("ft"), sink_token=sink_token).eval()  # ft = no prompt at all
    model.backbone.requires_grad_(False)
    scorer = make_scorer(model, data.spec, pair_encoding=pair_encoding, pair_head="fixed",
                         label_score_eos=label_score_eos)
    max_length = max_length or data.spec.max_length
    encoded = scorer.encode(examples, max_length)
    device = next(model.parameters()).device
    setting = {"template": data.spec.template_name}
    if scorer.pair_encoding == "siamese":
        scorer.fit(batches(tokenizer, scorer.encode(data.train[:fit_examples], max_length), batch_size))
        metrics = evaluate_pairs(scorer, encoded, examples, batch_size, device)
    elif model.kind_ops.label_eos and data.spec.kind == "classification":
        both = {}
        for eos in (label_score_eos, not label_score_eos):
            scorer = make_scorer(model, data.spec, label_score_eos=eos)
            both[str(eos).lower()] = evaluate(scorer, data.spec, tokenizer, encoded, examples, batch_size, device)
        metrics = {**both[str(label_score_eos).lower()], "label_score_eos": both}
        setting.update(sink_token=sink_token)
    else:
        metrics = evaluate(scorer, data.spec, tokenizer, encoded, examples, batch_size, device)
    pairs = {"pair_encoding": scorer.pair_encoding, "pooling": model.pooling.source} if model.kind_ops.segment_pairs else {}
    return {"task": data.spec.name, "split": split, "examples": len(examples), "backbone": backbone, **setting,
            **pairs, **metrics}
