"""`ept ls`: everything the registries know — methods, backbones, tasks (by tag), analyses, specs.

    ept ls
    ept ls --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ls", help="list methods, backbones and tasks", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def catalog() -> dict:
    """{"methods": [...], "backbones": [...], "tasks": {tag: [names]} or None if ept.tasks is absent}."""
    from ept.backbone_specs import BACKBONES
    from ept.method_configs import METHODS

    methods = [{"name": name, "aliases": METHODS.aliases_of(name), "summary": m.summary} for name, m in METHODS.items()]
    backbones = [{"name": name, "aliases": BACKBONES.aliases_of(name), "kind": s.kind, "embed_dim": s.embed_dim,
                  "source": s.source, **_fetch_state(name, s.source)} for name, s in BACKBONES.items()]
    from ept.analysis import ANALYSES
    from ept.tasks import TAGS, task_names

    tasks = {tag: task_names(tag) for tag in TAGS}
    # Shipped experiment specs, when run from a checkout (they are not part of the wheel).
    root = Path(__file__).resolve().parents[3] / "experiments"
    specs = sorted(str(p.relative_to(root.parent)) for p in root.glob("*/*.yaml")) if root.is_dir() else []
    return {"methods": methods, "backbones": backbones, "tasks": tasks, "analyses": ANALYSES.names(), "specs": specs}


def _fetch_state(name: str, source: str) -> dict:
    """For `ept fetch` backbones: where the converted folder goes and whether it is there yet."""
    if source != "fetch":
        return {}
    from ept.fetch import damage, is_complete, model_dir

    folder = model_dir(name)
    problems = damage(folder, full=True) if is_complete(folder) else []  # every byte against the fetch record
    return {"path": str(folder), "fetched": is_complete(folder) and not problems,
            **({"damaged": "; ".join(problems)} if problems else {})}


def run(args) -> int:
    cat = catalog()
    if args.json:
        print(json.dumps(cat, indent=1))
        return 0
    print("methods:")
    for m in cat["methods"]:
        name = m["name"] + (f" ({', '.join(m['aliases'])})" if m["aliases"] else "")
        print(f"  {name:<26} {m['summary']}")
    print("backbones (or any local model folder / hub id):")
    for b in cat["backbones"]:
        name = b["name"] + (f" ({', '.join(b['aliases'])})" if b["aliases"] else "")
        source = b["source"]
        if source == "fetch":
            source = (f"fetched: {b['path']}" if b["fetched"] else
                      f"DAMAGED: {b['path']} ({b['damaged']}; ept fetch {b['name']} --force)" if b.get("damaged") else
                      f"not fetched (ept fetch {b['name']})")
        print(f"  {name:<26} {b['kind']:<8} e={b['embed_dim']:<5} {source}")
    print("tasks by tag:")
    for tag, names in cat["tasks"].items():
        print(f"  {tag:<26} {', '.join(names)}")
    print(f"analyses (ept analyze NAME): {', '.join(cat['analyses'])}")
    if cat["specs"]:
        print("experiment specs (ept sweep SPEC):")
        for spec in cat["specs"]:
            print(f"  {spec}")
    return 0
