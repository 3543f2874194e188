"""`ept export`: the inference artifact of a trained prompt, network discarded (paper Table 4).

    ept export runs/sst2-ept --out exported/sst2-ept          # a training run (reads RUN/best/)
    ept export runs/sst2-ept/best --out exported/sst2-ept     # or the saved method folder itself
    ept export runs/sst2-ept --out exp --backbone /models/t5-base   # backbone moved since training

Writes `OUT/prompt.safetensors` + `OUT/prompt.json` (the projected prompt P'; EPT and EPT* store
ONE vector of e floats, broadcast n times at load) and `OUT/peft/` (a PEFT PROMPT_TUNING adapter:
`peft.PeftModel.from_pretrained(base, "OUT/peft")`). The backbone is loaded once to rebuild the
method exactly as trained (init schemes read its embeddings; the PEFT config records its shape).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# peft.TaskType values, spelled out so `--help` does not import peft.
PEFT_TASK_TYPES = ("SEQ_2_SEQ_LM", "FEATURE_EXTRACTION", "SEQ_CLS", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS")


def register(sub) -> None:
    p = sub.add_parser("export", help="write the projected prompt and a PEFT adapter folder", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_METHOD_DIR", help="a run folder (uses RUN/best/) or a saved method folder")
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--backbone", default=None,
                   help="load this backbone (name, local folder or hub id) instead of the one recorded at training")
    p.add_argument("--peft-task-type", default=None, choices=PEFT_TASK_TYPES,
                   help="PEFT task_type for the adapter (default: SEQ_2_SEQ_LM for T5, FEATURE_EXTRACTION for encoders)")
    p.set_defaults(func=run)


def method_dir(source) -> Path:
    """The folder holding method.json: SOURCE itself or SOURCE/best."""
    from ept.checkpoint import CONFIG_FILE
    from ept.training.rundir import RunDir

    source = Path(source)
    best = RunDir(source).best  # a training run keeps its best checkpoint (a save_method folder) there
    for folder in (source, best):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise FileNotFoundError(f"{source}: no saved method here or in {best} (expected {CONFIG_FILE}); "
                            "pass a run folder or the folder written by checkpoint.save_method")


def export_run(source, out, backbone: str | None = None, peft_task_type: str | None = None) -> dict:
    """Library form of the command: returns the written prompt.json as a dict."""
    from ept.backbones import load_backbone
    from ept.checkpoint import EXPORT_CONFIG, export_prompt, load_method, read_method_config

    folder = method_dir(source)
    meta = read_method_config(folder)
    if meta["prompt"]["method"] == "ft":  # fail before loading any weights
        raise ValueError(f"{folder}: method 'ft' has no prompt to export; its artifact is the whole backbone")
    record = _record(folder, meta, Path(source))
    name = backbone or meta["backbone"]
    model, tokenizer = load_backbone(name)
    prompted = load_method(folder, model, tokenizer)
    export_prompt(prompted, out, meta["backbone"], peft_task_type, record)
    from ept.training.rundir import read_json

    return read_json(Path(out) / EXPORT_CONFIG)


def _record(folder: Path, meta: dict, source: Path) -> dict:
    """The export's task, step and precision (`checkpoint.export_record`): the task from method.json
    (`ept serve` takes its label words and checks a --labels count against them), the step from
    method.json and, for a run folder, how far the run got; the precision it was validated in
    (`validated_precision`)."""
    from ept.checkpoint import export_record, with_run_settings
    from ept.training.rundir import BEST, RunDir
    from ept.tasks.taskfile import stored_spec

    run = RunDir(Path(folder).parent)
    is_run = Path(folder).name == BEST and run.config_path.is_file()  # else a saved method folder
    # How the run rendered and scored its rows (the template decides the label words): method.json
    # has it, or, written before it did, the run's config.
    meta = with_run_settings(meta, run.read_config()) if is_run else meta
    template, label_score_eos = meta.get("template"), meta.get("label_score_eos", True)
    task_spec = meta.get("task_spec")  # a task file's content (method.json keeps it): the export carries it
    try:
        spec = stored_spec(meta["task"], task_spec).with_template(template) if meta.get("task") else None
    except (KeyError, ValueError):  # no longer in the catalog: the name alone
        spec = None
    extra = dict(task=meta.get("task"), task_spec=task_spec, label_score_eos=label_score_eos,
                 precision=validated_precision(Path(source), Path(folder), meta))
    if not is_run:
        return export_record(spec, meta.get("step"), **extra)
    progress = run.progress()
    return export_record(spec, meta.get("step"), progress["reached"], progress["steps"], **extra)


def validated_precision(source: Path, folder: Path, meta: dict) -> str | None:
    """The precision the saved state was trained and validated in: its method.json's (runs since
    issue 22), else the run's results.json or last/state.json (older runs), else None (unknown)."""
    from ept.training.rundir import RunDir, read_json

    if meta.get("precision"):
        return meta["precision"]
    for run in map(RunDir, dict.fromkeys((source, folder.parent))):
        for path in (run.results_path, run.state_path):
            if path.is_file():
                recorded = read_json(path).get("precision")
                if recorded:
                    return recorded
    return None


def run(args) -> int:
    from ept.config import check_backbone, check_out_dir

    check_out_dir(args.out)  # a file or an unwritable folder fails before the backbone loads
    if args.backbone:
        check_backbone(args.backbone)
    info = export_run(args.source, args.out, args.backbone, args.peft_task_type)
    if info.get("partial"):
        print(f"ept export: note: {args.source} is partial (step {info['reached']} of {info['steps']}): "
              f"best step {info.get('step')} exported", file=sys.stderr)
    print(f"exported {info['method']} ({info['backbone']}, validated in {info.get('precision', 'an unrecorded precision')}): "
          f"{info['stored_vectors']} x {info['embed_dim']} floats "
          f"stored, broadcast to n={info['num_tokens']} -> {args.out}/prompt.safetensors; PEFT adapter -> {args.out}/peft")
    return 0
