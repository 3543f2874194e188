"""`ept train`: train a prompt method on a task; the run folder is the output.

    ept train --task sst2 --method ept
    ept train --task rte --method ept_star --steps 1000 --eval-every 200 --seed 1
    ept train --config experiments/cpu/main.yaml --lr 0.1       # flags override the file
    torchrun --nproc_per_node 2 -m ept.cli train --task sst2 --method pt --steps 50
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from ept.commands.common import add_method_args, method_overrides

# Fields with their own flags elsewhere (method switches) or none.
_NOT_FLAGS = {"method", "method_options", "task_spec", "task_file"}


def add_train_args(p) -> None:
    from ept.config import TrainConfig
    from ept.flags import add_field_flags

    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML or JSON file of TrainConfig keys; flags override it")
    add_field_flags(g, TrainConfig, skip=_NOT_FLAGS, default_note=True)
    add_method_args(p, default_method=None, linear_head=False)


def load_config_file(path: str) -> dict:
    import yaml

    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig keys, got {type(data).__name__}")
    return data


def config_from_args(args):
    """defaults < --config file < flags; every value is typed and range-checked by TrainConfig."""
    from ept.config import TrainConfig

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    for f in fields(TrainConfig):
        if f.name not in _NOT_FLAGS and getattr(args, f.name, None) is not None:
            data[f.name] = getattr(args, f.name)
    if args.method is not None:
        data["method"] = args.method
    options = dict(data.get("method_options") or {})
    options.update(method_overrides(args))
    data["method_options"] = options
    return TrainConfig.from_dict(data)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a method on a task (the main job)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.config import check_out_dir

    config = config_from_args(args)
    out = config.run_dir()
    existed = out.exists()
    check_out_dir(out, create=True)  # a file or a folder that cannot be made fails now, before any loading
    if not existed:  # made to prove it can be: the run makes it again, and removes it if it fails before writing
        out.rmdir()
    try:
        from ept.training.recipe import run as train_run  # (torch loads here: seconds in which a Ctrl-C may come)

        results = train_run(config, progress=not args.quiet)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: no traceback; say what is kept and how to go on
        from ept.training.rundir import RunDir
        from ept.training.stopping import StopRequested

        step = RunDir(out).start_step()
        kept = f"its last checkpoint is step {step} of {config.steps}" if step else "no checkpoint was written yet"
        how = f"{err.name}, at the end of a step" if isinstance(err, StopRequested) else "Ctrl-C"
        print(f"\nept train: stopped ({how}); {kept}: run the same command again to resume "
              f"({out})", file=sys.stderr)
        return err.exit_code if isinstance(err, StopRequested) else 130
    return 0 if results is None or results["status"] == "finished" else 1
