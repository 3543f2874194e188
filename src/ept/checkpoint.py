"""Save, load and export trained prompts. Tensors are safetensors, metadata is JSON; no pickles.

A saved method (`save_method`) holds what training needs to resume: the raw prompt and the
reparameterization network. An export (`export_prompt`) holds what inference needs: the
projected prompt P' with the network discarded — for EPT one vector of e floats, broadcast n
times — plus a PEFT PROMPT_TUNING adapter folder that `peft.PeftModel.from_pretrained` loads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ept import __version__
from ept.prompts import config_from_dict
from ept.training.rundir import RunDirError, atomic_save_tensors, atomic_write_json, atomic_write_text, read_json  # noqa: F401

STATE_FILE, CONFIG_FILE = "method.safetensors", "method.json"
EXPORT_FILE, EXPORT_CONFIG = "prompt.safetensors", "prompt.json"


class CheckpointError(RunDirError):
    """A saved state that does not fit the model, or cannot be read."""


def read_tensors(path, remedy: str = "") -> dict[str, torch.Tensor]:
    """A safetensors file, or one CheckpointError naming it (missing, truncated, not safetensors)."""
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing{tail}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors ({err}); the file is truncated or corrupt{tail}") from None


def check_state(state: dict, expected: dict, path, remedy: str = "") -> None:
    """`state` must hold exactly the tensors of `expected` (name -> tensor), with their shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {unexpected[:5]}"] if unexpected else []) \
        + ([f"wrong shape {shapes[:5]}"] if shapes else [])
    if problems:
        raise CheckpointError(f"{path}: does not fit the model ({'; '.join(problems)}): saved by another method, "
                              f"config or version?" + (f" {remedy}" if remedy else ""))
    # Training stops at a non-finite loss before it saves, so NaN/inf here is damage: resuming would
    # only fail the same way steps later, on every rerun.
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: NaN/inf values in {bad[:5]}: the checkpoint is damaged"
                              + (f"; {remedy}" if remedy else ""))


def load_state(model, path, remedy: str = "") -> None:
    """Load a trainable state into `model`, checked key by key and shape by shape first (the
    frozen backbone is not in the file, hence strict=False after the check)."""
    state = read_tensors(path, remedy)
    check_state(state, trainable_state(model), path, remedy)
    model.load_state_dict(state, strict=False)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Everything that trains: prompt encoder, optional head, and for ft the backbone; plus the
    siamese pair head's fitted buffers (its label direction, a fixed threshold), which do not train
    but belong to the state."""
    state = {k: v for k, v in model.named_parameters() if v.requires_grad}
    head = getattr(model, "pair_head", None)
    if head is not None:
        state.update({f"pair_head.{k}": v for k, v in head.named_buffers()})
    return state


def save_method(model, folder, backbone: str, extra: dict | None = None) -> None:
    folder = Path(folder)
    atomic_save_tensors(folder / STATE_FILE, trainable_state(model))
    meta = {"ept_version": __version__, "backbone": backbone, "embed_dim": model.embed_dim,
            "prompt": model.prompt_config.to_dict(),
            "linear_head": model.head.out_features if model.head is not None else 0, **pair_meta(model),
            **({"sink_token": model.sink_token} if getattr(model, "sink_token", None) else {}), **(extra or {})}
    atomic_write_json(folder / CONFIG_FILE, meta)


def read_method_config(folder) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved method here (expected {CONFIG_FILE} and {STATE_FILE})")
    return read_json(path)


def load_method(folder, backbone_model=None, tokenizer=None, dtype=None):
    """Rebuild a PromptedModel from a saved folder (loads the backbone unless one is given)."""
    from ept.backbones import PromptedModel, load_backbone

    meta = read_method_config(folder)
    if backbone_model is None:
        backbone_model, tokenizer = load_backbone(meta["backbone"], dtype=dtype)
    model = PromptedModel(backbone_model, tokenizer, config_from_dict(meta["prompt"]), meta.get("linear_head", 0),
                          sink_token=meta.get("sink_token"))
    attach_pair_head(model, meta)
    load_state(model, Path(folder) / STATE_FILE)
    return model


def pair_meta(model) -> dict:
    """How the model scores sentence pairs: {"pair_encoding": "siamese", "pair_head": {...},
    "pooling": {...}} with a pair head, else {"pair_encoding": "cross"}."""
    head = getattr(model, "pair_head", None)
    if head is None:
        return {"pair_encoding": "cross"}
    return {"pair_encoding": "siamese", "pair_head": head.to_meta(), "pooling": model.pooling.to_dict()}


def attach_pair_head(model, meta: dict) -> None:
    """Rebuild the (empty) pair head a saved method or export describes; its tensors load after."""
    if meta.get("pair_encoding") == "siamese":
        from ept.heads import PairHead

        model.pair_head = PairHead.from_meta(meta["pair_head"]).to(next(model.backbone.parameters()).device)


# ------------------------------------------------------------------------------- export
def export_record(spec=None, step: int | None = None, reached: int | None = None, steps: int | None = None,
                  task: str | None = None, task_spec: dict | None = None, label_score_eos: bool = True,
                  precision: str | None = None) -> dict:
    """What every export records beside its prompt, whoever writes it (`ept train`'s RUN/export,
    `ept export`), in one place: the task it was trained on (name, kind, label words and their
    count: a server refuses a label set of another size) and the step the prompt was taken at
    (`step`), with how far the run had got (`reached` of `steps`; `partial` when short of it); a task
    file's content (`task_spec`), a non-default label scoring (`label_score_eos`) and the precision
    it was trained and validated in (`ept serve` computes in it; None: unknown).
    Extend it here (the full task spec), not at the callers."""
    out: dict = {"task": task} if task else {}  # a task the catalog does not know: its name at least
    if spec is not None:
        words = list(getattr(spec, "label_words", ()) or ())
        kind = getattr(spec, "kind", "classification")
        out.update(task=spec.name, task_kind=kind, label_words=words,
                   num_labels=len(words) if kind == "classification" else None,
                   template=getattr(spec, "template_name", None))  # its label words and input format
    if task_spec is not None:  # a task file's content: `ept serve` rebuilds the task (fields, template) from it
        out["task_spec"] = task_spec
    if not label_score_eos:  # decoder-only rank scoring without EOS, as the run scored (ept.heads)
        out["label_score_eos"] = False
    if step is not None:
        out["step"] = step
    if precision is not None:
        out["precision"] = precision
    if steps is not None:
        out.update(reached=reached, steps=steps, partial=reached is None or reached < steps)
    return out


def export_prompt(model, out, backbone: str, peft_task_type: str | None = None, extra: dict | None = None) -> Path:
    """Write the inference artifact and a PEFT adapter folder `out/peft`.

    `prompt.safetensors` stores the distinct vectors only (EPT: 1 x e, broadcast n times at load);
    `peft/adapter_model.safetensors` stores the full n x e matrix under `prompt_embeddings`, the
    single key PEFT's prompt learning state dict has.

    PEFT caveat (peft 0.21, `PeftModelForFeatureExtraction` / `ForSeq2SeqLM`): prompt learning
    drops `token_type_ids` with a warning, so on a BERT-family backbone a sentence PAIR gives
    different hidden states under PEFT than under ept, which keeps segment B at type 1 (the
    prompt gets type 0). Single sentences agree exactly; tests/test_export.py pins both facts.
    """
    from peft import PromptTuningConfig

    out = Path(out)
    with torch.no_grad():
        prompt = model.prompt()
    if prompt is None:
        raise ValueError("method 'ft' has no prompt to export; its artifact is the whole backbone")
    prompt = prompt.float().contiguous()  # (n, e)
    n, e = prompt.shape
    broadcast = bool(n > 1 and torch.equal(prompt, prompt[:1].expand(n, -1)))
    vectors = prompt[:1] if broadcast else prompt
    head = getattr(model, "pair_head", None)
    head_state = {f"pair_head.{k}": v.float().reshape(-1) for k, v in head.state_dict().items()} if head is not None else {}
    head_params = sum(v.numel() for k, v in head_state.items() if not k.endswith(".positive"))
    atomic_save_tensors(out / EXPORT_FILE, {"prompt": vectors, **head_state})
    atomic_write_json(out / EXPORT_CONFIG, {
        "ept_version": __version__, "backbone": backbone, "method": model.prompt_config.method,
        "num_tokens": n, "embed_dim": e, "broadcast": broadcast,
        "stored_vectors": vectors.shape[0], "inference_params": vectors.numel() + head_params,
        **pair_meta(model), **({"sink_token": model.sink_token} if getattr(model, "sink_token", None) else {}),
        # decoder-only: ept tokenises inputs without special tokens (BOS, if any, is the PEFT adapter's first token)
        **({"peft_add_special_tokens": False} if model.kind_ops.lead_token else {}),
        **(extra or {}),
    })
    peft_prompt = peft_prompt_embeddings(model, prompt)
    task_type = peft_task_type or model.kind_ops.peft_task_type
    cfg = PromptTuningConfig(task_type=task_type, num_virtual_tokens=peft_prompt.shape[0], token_dim=e,
                             num_transformer_submodules=1,
                             num_attention_heads=getattr(model.backbone.config, "num_attention_heads", None)
                             or getattr(model.backbone.config, "num_heads", None),
                             num_layers=getattr(model.backbone.config, "num_hidden_layers", None)
                             or getattr(model.backbone.config, "num_layers", None),
                             base_model_name_or_path=backbone, inference_mode=True)
    peft_dir = out / "peft"
    peft_dir.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(peft_dir))
    atomic_save_tensors(peft_dir / "adapter_model.safetensors", {"prompt_embeddings": peft_prompt})
    return out


def peft_prompt_embeddings(model, prompt: torch.Tensor) -> torch.Tensor:
    """The virtual tokens of the PEFT adapter. PEFT's prompt tuning puts them before the tokenised
    input (peft `PeftModelForCausalLM.forward`: `torch.cat((prompts, inputs_embeds), dim=1)`), so
    a tokenizer that adds BOS (Llama 3, Gemma) would give [P'][BOS][x] where ept runs [BOS][P'][x].
    A decoder-only export therefore starts the adapter with the embedding of the token ept puts
    before P' (BOS or the sink token), and its inputs are tokenised without special tokens
    (prompt.json: `peft_add_special_tokens: false`), which gives [BOS][P'][x] exactly."""
    lead = getattr(model, "lead_token_id", None)
    if lead is None:
        return prompt
    return torch.cat([model.token_embedding(lead), prompt.cpu()]).contiguous()


def with_run_settings(meta: dict, config: dict) -> dict:
    """`meta` (a run's best/method.json or RUN/export/prompt.json) with what it was written without,
    before ept recorded it, taken from the run's config: the task, the template and the label
    scoring. Without them an old run would be exported and served with the T5 template and the EOS
    term, whatever it was trained with."""
    out = dict(meta)
    for key in ("task", "template"):
        out[key] = out.get(key) or config.get(key)
    if "label_score_eos" not in out and config.get("label_score_eos") is False:
        out["label_score_eos"] = False
    return out


def load_exported(folder) -> tuple[torch.Tensor, dict]:
    """(P' (n, e), metadata) from an export folder, broadcast restored. A siamese export's
    metadata carries `pair_encoding`, `pair_head` (kind, labels) and `pair_head_state`, the head's
    tensors (threshold, log_temperature / anchors, positive) for `PairHead.load_state_dict`."""
    folder = Path(folder)
    path = folder / EXPORT_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: not an ept export folder (expected {EXPORT_FILE} and {EXPORT_CONFIG})")
    meta = read_json(path)
    meta.setdefault("pair_encoding", "cross")  # exports written before siamese pairs existed
    run_config = folder.parent / "config.json"
    if folder.name == "export" and run_config.is_file():  # a RUN/export/: its run's config fills the gaps
        meta = with_run_settings(meta, read_json(run_config))
    if meta.get("task") and "template" not in meta and "task_spec" not in meta:
        # A task's prompt written before ept recorded the input format, away from its run folder: it is
        # served with the task's default template and the EOS term, whatever it was trained with.
        # (A prompt exported with no task at all is served with the spec its caller gives.)
        warnings.warn(f"{path}: records no template (written before exports recorded it); it is "
                      f"served with the task's default template and label scoring with EOS. If it was trained "
                      f"otherwise, export it again from its run folder (ept export RUN)", stacklevel=2)
    tensors = read_tensors(folder / EXPORT_FILE, "export the run again (ept export)")
    vectors = tensors.get("prompt")
    if vectors is None:
        raise CheckpointError(f"{folder / EXPORT_FILE}: no 'prompt' tensor; export the run again (ept export)")
    if meta["pair_encoding"] == "siamese":
        state = {k.removeprefix("pair_head."): v for k, v in tensors.items() if k.startswith("pair_head.")}
        meta["pair_head_state"] = {k: (v.long().reshape(()) if k == "positive" else v) for k, v in state.items()}
    if vectors.shape[0] == 1 and meta["num_tokens"] > 1:
        vectors = vectors.expand(meta["num_tokens"], -1)
    if tuple(vectors.shape) != (meta["num_tokens"], meta["embed_dim"]):
        raise ValueError(f"{folder}: prompt shape {tuple(vectors.shape)} does not match {EXPORT_CONFIG}")
    return vectors, meta
