"""`ept data`: inspect the task data.

    ept data check --data-dir ../shared/data        # all 21 tasks: complete / partial / missing
    ept data describe rte --data-dir ../shared/data # sizes, labels, one example, truncation rate
    ept data describe sst2 --tokenizer t5-base      # truncation for another (local or cached) tokenizer
    ept data describe mrpc --split-protocol table5  # the paper's Table 5 sizes where they differ from B.1
    ept data describe tickets.yaml                  # a task file (README "Your own task")
    ept data check tickets.yaml                     # validate every row of a task file's data
    ept data export-task sst2 > sst2.yaml           # a built-in task as a task file, to start from

Handlers are thin: the work is in `ept.tasks` (loaders, check) so a notebook can call it too.
"""

from __future__ import annotations

import argparse
import random
import sys

EXAMPLES = """examples:
  ept data check --data-dir ../shared/data
  ept data check --skip-bad-rows
  ept data describe rte --data-dir ../shared/data
  ept data describe multirc --tokenizer /path/to/tokenizer --seed 0
  ept data describe winogrande --split-protocol table5
  ept data describe tickets.yaml
  ept data check tickets.yaml
  ept data export-task sst2 > sst2.yaml"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="check and describe the task data", description=__doc__.split("\n")[0],
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")

    describe = actions.add_parser(
        "describe", help="source, split sizes, labels, one example, truncation rate of one task",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    describe.add_argument("task", help="task name or alias (see `ept data check`), or a task file")
    _data_dir_flag(describe)
    describe.add_argument("--tokenizer", default=None, metavar="NAME_OR_PATH",
                          help="tokenizer for the truncation rate (default: the embedded all-MiniLM-L6-v2)")
    describe.add_argument("--seed", type=int, default=42, help="split protocol seed (default 42)")
    describe.add_argument("--split-protocol", choices=("b1", "table5"), default="b1",
                          help="b1: the text of Appendix B.1 (default); table5: the paper's Table 5 sizes where "
                               "they differ (MRPC, MNLI, HotpotQA, NewsQA, WinoGrande, SciTail, PAWS)")
    describe.add_argument("--source", choices=("auto", "local", "hub"), default="auto",
                          help="local files, hub, or local when present (default auto)")
    describe.add_argument("--max-examples", type=int, default=5000, metavar="N",
                          help="tokenize at most N examples (seeded sample) for the truncation rate")
    describe.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows instead of failing")
    describe.add_argument("--template", default=None, help="the task's template to show (t5 | natural | ...)")

    check = actions.add_parser(
        "check", help="walk all 21 tasks (or the given ones), validate every row, report complete / partial / missing",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("tasks", nargs="*", metavar="TASK", help="task names or task files (default: the 21 tasks)")
    _data_dir_flag(check)
    check.add_argument("--skip-bad-rows", action="store_true",
                       help="report malformed rows but exit 0 (they would be skipped by loading)")
    export = actions.add_parser(
        "export-task", help="print a built-in task as a task file (YAML), to edit into your own",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("task", help="a registered task name (ept ls)")
    _data_dir_flag(export)
    parser.set_defaults(func=run, _data_parser=parser)


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, metavar="D",
                        help="data root with one folder per task (default: $EPT_DATA_DIR, else ../shared/data)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "describe":
        return run_describe(args)
    if args.data_command == "check":
        return run_check(args)
    if args.data_command == "export-task":
        return run_export_task(args)
    args._data_parser.print_help()
    return 2


def run_check(args: argparse.Namespace) -> int:
    from ept.tasks import resolve_data_dir
    from ept.tasks.check import check_all, check_task, format_table
    from ept.tasks.taskfile import is_task_file, resolve_task

    specs = [resolve_task(t) for t in args.tasks]  # a bad name or task file fails before any reading
    data_dir = None if all(is_task_file(t) for t in args.tasks) and args.tasks else resolve_data_dir(args.data_dir)
    checks = [check_task(s, data_dir) for s in specs] if specs else check_all(data_dir)
    if data_dir is not None:
        print(f"data dir: {data_dir}\n")
    print(format_table(checks))
    counts = {s: sum(c.status == s for c in checks) for s in ("complete", "partial", "missing", "error")}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    problems = [e for c in checks for e in c.errors]
    if problems:
        print(f"\nmalformed rows / files ({sum(c.bad_rows for c in checks)}):", file=sys.stderr)
        for e in problems:
            print(f"  {e}", file=sys.stderr)
    failed = counts["error"] or (any(c.bad_rows for c in checks) and not args.skip_bad_rows)
    return 1 if failed else 0


def run_describe(args: argparse.Namespace) -> int:
    from ept.tasks import label_distribution, load_task

    from ept.tasks.splits import protocol_rule
    from ept.tasks.taskfile import resolve_task

    data = load_task(resolve_task(args.task), data_dir=args.data_dir, seed=args.seed, skip_bad_rows=args.skip_bad_rows,
                     source=args.source, split_protocol=args.split_protocol, template=args.template)
    spec = data.spec
    rule, sample_k, _ = protocol_rule(spec, args.split_protocol)
    print(f"task:     {spec.name} ({spec.benchmark}, {spec.kind}; metrics {', '.join(spec.metrics)}; "
          f"main {spec.main_metric}; v{spec.version})")
    print(f"source:   {data.source}")
    how = (f"task file: {spec.splits} splits" if spec.splits != "protocol" else
           f"protocol {args.split_protocol}; rule for official train {spec.train_size:,}: {rule}"
           f"{f' {sample_k:,}' if rule == 'sample' else ''}")
    print("splits:   " + ", ".join(f"{k} {v:,}" for k, v in data.sizes().items()) + f"  ({how})")
    print(f"template: {spec.template_name} (this task's: {', '.join(spec.template_names)}; --template NAME)")
    for note in data.notes:
        print(f"  - {note}")
    if data.bad_rows:
        print(f"  - {data.bad_rows} malformed row(s) skipped")
    print("labels:")
    for split in ("train", "validation", "test"):
        dist = label_distribution(spec, getattr(data, split))
        print(f"  {split:<10} " + (", ".join(f"{k} {v:,}" for k, v in dist.items()) or "(empty)"))
    example = next((ex for split in (data.train, data.validation, data.test) for ex in split), None)
    if example is not None:
        print("example:")
        print(f"  source: {_clip(example.source, 600)}")
        print(f"  target: {example.target}" + (f"   (group {example.group})" if example.group else ""))
    print(_truncation_line(data, args.tokenizer, args.max_examples, args.seed))
    return 0


def run_export_task(args: argparse.Namespace) -> int:
    import yaml

    from ept.tasks import get_task, resolve_data_dir
    from ept.tasks.taskfile import export_task

    spec = get_task(args.task)
    content = export_task(spec, resolve_data_dir(args.data_dir) / spec.name)
    print(f"# {spec.name} as a task file (ept data export-task {args.task}); its data paths are absolute.\n"
          f"# Train on it with `ept train --task FILE`; rename the task (name:) when you edit it.")
    print(yaml.safe_dump(content, sort_keys=False, default_flow_style=None, allow_unicode=True, width=120), end="")
    return 0


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f" ... [{len(text):,} chars]"


def _truncation_line(data, tokenizer_name: str | None, max_examples: int, seed: int) -> str:
    from ept.tasks.truncation import load_tokenizer, truncation_rate

    examples = data.train + data.validation + data.test
    if len(examples) > max_examples:
        examples = random.Random(seed).sample(examples, max_examples)
    try:
        tokenizer, name = load_tokenizer(tokenizer_name)
    except Exception as err:  # noqa: BLE001 - truncation is informative only
        return f"truncation: tokenizer unavailable ({err})"
    n, total, longest = truncation_rate(tokenizer, [ex.source for ex in examples], data.spec.max_length)
    rate = 100.0 * n / total if total else 0.0
    return (f"truncation: {n:,} of {total:,} inputs ({rate:.1f}%) exceed max_length {data.spec.max_length} "
            f"tokens with {name} (longest {longest:,})")
