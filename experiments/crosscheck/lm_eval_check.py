"""Check ept's exported prompts with a client nobody here wrote: lm-evaluation-harness.

For each trained run (decoder-only backbone, SST-2, the natural template), this exports its prompt to
the PEFT format (`ept export`), scores the same test rows twice and compares them row by row:
- ept:     `ept serve --prompt sst2=EXPORT --input rows.jsonl`: the run's template and label scoring;
- lm-eval: `lm_eval.simple_evaluate(model="hf", model_args=pretrained=BACKBONE,peft=EXPORT/peft)`
  on a task written here: the same template and label words, each label scored as the
  log-likelihood of " word" after the context (no EOS term: the runs' `label_score_eos: false`).
  PEFT prepends the virtual tokens; lm-eval finds the continuation's logits behind them itself.
Also the frozen backbone alone (lm-eval without `peft`) against `ept eval --no-prompt` accuracy.
Agreement means the export, PEFT's prompt placement, tokenisation and rank scoring all match ept's.

lm-eval is not one of ept's dependencies; install it beside ept (a venv that sees ept's packages):
    python -m venv --system-site-packages .venv-lmeval && .venv-lmeval/bin/pip install lm_eval==0.4.13
    .venv-lmeval/bin/python experiments/crosscheck/lm_eval_check.py \
        results/smollm2-prereg/A/prompts/sst2-pt-s0 results/smollm2-prereg/A/prompts/sst2-ept-s0 --rows 300
Writes results/crosscheck/lm-eval-sst2.{json,md} (`--out` for elsewhere). CPU: a few minutes per 300
rows on SmolLM2-135M. Each run's comparison is kept in OUT/runs/ as it ends and reused by a rerun
with the same rows, so a long check cut short goes on where it stopped. With all test rows, each run
is also compared with its own recorded test predictions (predictions-test.jsonl): lm-eval against
the numbers training reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ept.atomic_io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "crosscheck"
TASK = "ept_crosscheck_sst2_natural"
# lm-eval's task, written out by hand (not from ept's template string), so that the rendering is
# checked too: ept's own rendered source must equal this text, row by row (`write_rows`).
TEMPLATE = "Review: {sentence}\nSentiment:"
LABELS = ("negative", "positive")


def write_rows(folder: Path, rows: int, data_dir: str | None) -> tuple[Path, Path, list[dict]]:
    """The first `rows` SST-2 test rows (ept's split) as lm-eval's data file and ept serve's input."""
    from ept.tasks import load_task

    data = load_task("sst2", data_dir=data_dir, template="natural")
    if tuple(data.spec.label_words) != LABELS:
        raise SystemExit(f"sst2's natural label words are {data.spec.label_words}, this check expects {LABELS}")
    docs = []
    for i, x in enumerate(data.test[:rows]):
        sentence = x.fields[0]
        if x.source != TEMPLATE.format(sentence=sentence):  # the two renderings must be the same text
            raise SystemExit(f"row {i}: ept renders {x.source!r}, lm-eval's task {TEMPLATE.format(sentence=sentence)!r}")
        docs.append({"row": i, "sentence": sentence, "label": int(x.label)})
    lm_rows, ept_rows = folder / "docs.jsonl", folder / "serve-input.jsonl"
    lm_rows.write_text("".join(json.dumps(d) + "\n" for d in docs))
    ept_rows.write_text("".join(json.dumps({"task": "sst2", "text": d["sentence"]}) + "\n" for d in docs))
    return lm_rows, ept_rows, docs


def write_task(folder: Path, docs_file: Path) -> None:
    jinja = TEMPLATE.replace("{sentence}", "{{sentence}}")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(docs_file))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        f"doc_to_text: {json.dumps(jinja)}\n"
        f"doc_to_choice: {json.dumps(list(LABELS))}\n"
        "doc_to_target: label\n"
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n")


def lm_eval_scores(folder: Path, backbone_dir: Path, peft_dir: Path | None, batch_size: int) -> list[list[float]]:
    """Per row, lm-eval's log-likelihood of each label (in LABELS order)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    args = {"pretrained": str(backbone_dir), "dtype": "float32", "add_bos_token": False}
    if peft_dir is not None:
        args["peft"] = str(peft_dir)
    out = simple_evaluate(model="hf", model_args=args, tasks=[TASK], task_manager=TaskManager(include_path=str(folder)),
                          batch_size=batch_size, device="cpu", log_samples=True)
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


def ept_scores(run: Path, folder: Path, ept_rows: Path, batch_size: int) -> list[list[float]]:
    export = folder / f"export-{run.name}"
    if not export.exists():
        subprocess.run(["ept", "export", str(run), "--out", str(export)], check=True, stdout=subprocess.DEVNULL)
    out = folder / f"serve-{run.name}-b{batch_size}.jsonl"
    subprocess.run(["ept", "serve", "--prompt", f"sst2={export}", "--input", str(ept_rows), "--output", str(out),
                    "--precision", "fp32", "--batch-size", str(batch_size)], check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line)["scores"] for line in out.read_text().splitlines() if line.strip()]


def compare(name: str, ept: list[list[float]], lm: list[list[float]], labels: list[int],
            ept_b1: list[list[float]] | None, recorded: list[int] | None = None) -> dict:
    """Accuracy both ways, rows whose prediction differs, score differences; the noise floor is
    ept against itself at batch size 1 (other padding, other matmul shapes: fp32 rounding only).
    `recorded`: the run's own test predictions, row by row, when the check covers them all."""
    import numpy as np

    a, b, y = np.array(ept), np.array(lm), np.array(labels)
    pa, pb = a.argmax(1), b.argmax(1)
    out = {"run": name, "rows": len(y), "ept_accuracy": round(100 * float((pa == y).mean()), 2),
           "lm_eval_accuracy": round(100 * float((pb == y).mean()), 2),
           "predictions_that_differ": int((pa != pb).sum()),
           "max_abs_score_diff": float(np.abs(a - b).max()), "mean_abs_score_diff": float(np.abs(a - b).mean()),
           "max_abs_margin_diff": float(np.abs((a[:, 1] - a[:, 0]) - (b[:, 1] - b[:, 0])).max())}
    if ept_b1 is not None:
        c = np.array(ept_b1)
        out |= {"noise_floor_max_abs_diff": float(np.abs(a - c).max()),
                "noise_floor_predictions_that_differ": int((pa != c.argmax(1)).sum())}
    if recorded is not None:
        r = np.array(recorded)
        out |= {"recorded_accuracy": round(100 * float((r == y).mean()), 2),
                "lm_eval_differs_from_recorded": int((pb != r).sum())}
    return out


def recorded_predictions(run: Path, rows: int) -> list[int] | None:
    """The run's test predictions as training recorded them (rows 0..rows-1), if it has them all."""
    path = run / "predictions-test.jsonl"
    if not path.exists():
        return None
    by_row = {r["row"]: int(r["prediction"]) for r in map(json.loads, path.read_text().splitlines()) if r}
    return [by_row[i] for i in range(rows)] if all(i in by_row for i in range(rows)) else None


def report(rows: list[dict], n: int, batch_size: int) -> list[str]:
    """The markdown table of `main`'s rows."""
    md = ["# ept vs lm-evaluation-harness on ept's PEFT exports (generated by experiments/crosscheck/lm_eval_check.py)",
          "", f"SST-2 test, first {n} rows, natural template, labels scored without EOS, fp32. "
          "lm-eval loads the backbone with the exported PEFT adapter and scores each label as a continuation.", "",
          "Noise floor: ept against itself at batch size 1 instead of "
          f"{batch_size} (other padding and matmul shapes, so fp32 rounding only).", "",
          "| run | rows | ept accuracy | lm-eval accuracy | predictions that differ | max / mean abs score diff (nats) "
          "| noise floor: max diff, predictions that differ |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        diff = f"{r['max_abs_score_diff']:.2e} / {r['mean_abs_score_diff']:.2e}" if "max_abs_score_diff" in r else "—"
        floor = f"{r['noise_floor_max_abs_diff']:.2e}, {r['noise_floor_predictions_that_differ']}" if "noise_floor_max_abs_diff" in r else "—"
        md.append(f"| {r['run']} | {r['rows']} | {r['ept_accuracy']:.2f} | {r['lm_eval_accuracy']:.2f} | "
                  f"{r.get('predictions_that_differ', '—')} | {diff} | {floor} |")
    recorded = [r for r in rows if "recorded_accuracy" in r]
    if recorded:
        md += ["", "Against each run's own recorded test predictions (`predictions-test.jsonl`, written by training):", "",
               "| run | recorded accuracy | lm-eval accuracy | lm-eval predictions that differ from the recorded ones |",
               "| --- | --- | --- | --- |"]
        md += [f"| {r['run']} | {r['recorded_accuracy']:.2f} | {r['lm_eval_accuracy']:.2f} | {r['lm_eval_differs_from_recorded']} |"
               for r in recorded]
    return md


def check_run(run: Path, folder: Path, ept_rows: Path, docs: list[dict], args) -> dict:
    """One run's comparison, kept in OUT/runs/RUN.json and reused while the rows and settings match."""
    cache = args.out / "runs" / f"{run.name}.json"
    key = {"rows": args.rows, "batch_size": args.batch_size, "noise_floor": args.noise_floor}
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())["result"]
    cfg = json.loads((run / "config.json").read_text())
    if cfg["task"] != "sst2" or cfg.get("template") != "natural" or cfg.get("label_score_eos", True):
        raise SystemExit(f"{run}: this check is for SST-2 runs with template natural, label_score_eos false")
    from ept.backbones import resolve_backbone

    backbone_dir = Path(resolve_backbone(cfg["backbone"])[0])
    ept = ept_scores(run, folder, ept_rows, args.batch_size)
    ept_b1 = ept_scores(run, folder, ept_rows, 1) if args.noise_floor else None
    lm = lm_eval_scores(folder, backbone_dir, folder / f"export-{run.name}" / "peft", args.batch_size)
    result = compare(run.name, ept, lm, [d["label"] for d in docs], ept_b1, recorded_predictions(run, len(docs)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="ept train run folders (SST-2, natural template, decoder-only)")
    p.add_argument("--rows", type=int, default=300, help="first N test rows (default 300)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-frozen", action="store_true", help="skip the frozen-backbone comparison")
    p.add_argument("--no-noise-floor", dest="noise_floor", action="store_false",
                   help="skip ept's batch-size-1 pass (the noise floor; it costs as much as the check)")
    p.add_argument("--out", type=Path, default=OUT, help=f"where lm-eval-sst2.{{json,md}} go (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    import torch

    from ept.backbones import resolve_backbone
    from ept.envinfo import collect_env

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    with tempfile.TemporaryDirectory(prefix="ept-lmeval-") as tmp:
        folder = Path(tmp)
        lm_rows, ept_rows, docs = write_rows(folder, args.rows, args.data_dir)
        write_task(folder, lm_rows)
        labels = [d["label"] for d in docs]
        backbone = None
        for run in args.runs:
            backbone = backbone or json.loads((run / "config.json").read_text())["backbone"]
            rows.append(check_run(run, folder, ept_rows, docs, args))
            print(json.dumps(rows[-1]))
        if not args.no_frozen and backbone:
            cmd = ["ept", "eval", "--no-prompt", "--task", "sst2", "--backbone", backbone, "--template", "natural",
                   "--label-score-eos", "false", "--split", "test", "--max-eval-examples", str(args.rows), "--json"]
            frozen = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            lm = lm_eval_scores(folder, Path(resolve_backbone(backbone)[0]), None, args.batch_size)
            acc = 100 * sum(int(max(range(2), key=s.__getitem__) == y) for s, y in zip(lm, labels)) / len(labels)
            rows.append({"run": "no prompt (frozen)", "rows": len(labels), "ept_accuracy": round(frozen["accuracy"], 2),
                         "lm_eval_accuracy": round(acc, 2)})
            print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"check": "ept serve vs lm-evaluation-harness on ept's PEFT exports", "task": "sst2 test, natural template",
              "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None, "runs": rows,
              "env": collect_env()}
    atomic_write_text(args.out / "lm-eval-sst2.json", json.dumps(result, indent=2) + "\n")
    md = report(rows, args.rows, args.batch_size)
    atomic_write_text(args.out / "lm-eval-sst2.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
