"""Scale `ept serve --http` out on Ray Serve: the same FastAPI app, one copy per replica.

    serve run ept.serving.ray_app:build prompts_dir=/srv/exports replicas=2 port=8000
    serve run ept.serving.ray_app:build prompt=sst2=/srv/exports/sst2,rte=/srv/exports/rte labels=rte=entailment/not_entailment

Each replica loads its own backbone and prompts from the export folders (the only thing the
replicas share; put them on a path every node sees) and runs its own dynamic-batching worker; Ray
Serve's proxy spreads requests over the replicas. Args (all strings, as `serve run` passes them):
prompts_dir, prompt (NAME=DIR,...), labels (NAME=w1/w2/...;NAME=...), backbone, max_length,
eval_mode, replicas (default 1), num_cpus (per replica, default 1), max_batch, max_wait_ms,
max_queue, max_body_bytes, token_file. A prompt PUT/DELETE over HTTP reaches ONE replica: change
the export folders and redeploy (or call every replica) to change them all.
"""

from __future__ import annotations


def _pairs(text: str, sep: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(sep))):
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise ValueError(f"{item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _loader(args: dict):
    """A picklable zero-argument function that builds the replica's MultiTaskServer."""
    prompts = _pairs(str(args.get("prompt", "")), ",")
    labels = {k: tuple(v.split("/")) for k, v in _pairs(str(args.get("labels", "")), ";").items()}
    backbone, prompts_dir = args.get("backbone"), args.get("prompts_dir")
    max_length = int(args["max_length"]) if args.get("max_length") else None
    eval_mode = args.get("eval_mode")

    def load():
        from ept.serving.server import build_server, find_exports, load_prompts

        return build_server(load_prompts(find_exports(prompts, prompts_dir), labels), backbone, max_length, eval_mode)

    from ept.serving.server import find_exports, load_prompts

    load_prompts(find_exports(prompts, prompts_dir), labels)  # a bad folder or label set fails here, not in N replicas
    return load


def build(args: dict):
    """Ray Serve application builder (`serve run ept.serving.ray_app:build key=value ...`)."""
    from ray import serve

    from ept.serving.http_app import ServeConfig, create_app, read_token

    config = ServeConfig(max_batch=int(args.get("max_batch", 32)), max_wait_ms=float(args.get("max_wait_ms", 5)),
                         max_queue=int(args.get("max_queue", 1024)),
                         max_body_bytes=int(args.get("max_body_bytes", 1 << 20)),
                         token=read_token(args.get("token_file")), eval_mode=args.get("eval_mode"),
                         allowed_paths=tuple(filter(None, [args.get("prompts_dir"),
                                                           *_pairs(str(args.get("prompt", "")), ",").values()])))
    load = _loader(args)

    def make_app():  # runs inside each replica: its own app, model and worker thread
        return create_app(config, load=load)

    @serve.deployment(num_replicas=int(args.get("replicas", 1)),
                      ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))})
    @serve.ingress(make_app)
    class EptServe:
        pass

    return EptServe.bind()
