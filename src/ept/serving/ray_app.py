"""Scale `ept serve --http` out on Ray Serve: the same FastAPI app, one copy per replica.

    serve run ept.serving.ray_app:build prompts_dir=/srv/exports replicas=2 port=8000
    serve run ept.serving.ray_app:build prompt=sst2=/srv/exports/sst2,rte=/srv/exports/rte labels=rte=entailment/not_entailment

Each replica loads its own backbone and prompts from the export folders (put them on a path every
node sees) and runs its own dynamic-batching worker; Ray Serve's proxy spreads requests over the
replicas. Args (all strings, as `serve run` passes them): prompts_dir, prompt (NAME=DIR,...),
labels (NAME=w1/w2/...;NAME=...), backbone, max_length, eval_mode, precision, precision_fallback,
prefix_cache_mb, replicas (default 1), num_cpus (per replica, default 1), max_batch, max_wait_ms,
max_queue, max_body_bytes, token_file, sync_seconds (default 1), allow_path (DIR,...: as --allow-path),
prompt_log (FILE on storage every node sees: as --prompt-log, the log survives its replica and the app).

Prompt changes reach every replica: a PUT/DELETE lands on one replica, which applies it (its errors
answer the caller) and records it in ONE log, a one-replica deployment of the same application
(`EptPromptLog`); every replica replays the log in version order every `sync_seconds`, so all serve
the same prompts within about that time plus one prompt load, and a replica started later (scaled
up, restarted) replays it before it serves. An upload travels in the log as its bytes; an export
path must be readable on every node. The log lives and dies with the application: `serve delete`
removes it too (it was once a detached actor that outlived the application, uploads and all). It is
held in memory unless prompt_log=FILE names a file for it: without one, if its replica dies, Serve
starts it again empty, in a new epoch, and the replicas follow the new log from its first change,
keeping what they serve, while a replica started after that lacks the prompts changed before it;
with one, the restarted log reads the file back and nothing is lost.
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


LOG_DEPLOYMENT = "EptPromptLog"


class RayPromptLog:
    """`ept.serving.http_app.PromptLog` as the `LOG_DEPLOYMENT` of the replica's own application,
    reached through a deployment handle looked up on first use (the application's name is only
    known inside a replica). Picklable: it travels in ServeConfig."""

    def __init__(self, deployment: str = LOG_DEPLOYMENT):
        self.deployment, self._log = deployment, None

    def __getstate__(self):
        return {"deployment": self.deployment, "_log": None}

    def _handle(self):
        if self._log is None:
            from ray import serve

            app = serve.get_replica_context().replica_id.deployment_id.app_name
            self._log = serve.get_deployment_handle(self.deployment, app_name=app)
        return self._log

    async def record(self, name: str, change):
        return await self._handle().record.remote(name, change)

    async def since(self, version: int, epoch: str | None = None):
        return await self._handle().since.remote(version, epoch)


def _loader(args: dict):
    """A picklable zero-argument function that builds the replica's MultiTaskServer."""
    prompts = _pairs(str(args.get("prompt", "")), ",")
    labels = {k: tuple(v.split("/")) for k, v in _pairs(str(args.get("labels", "")), ";").items()}
    backbone, prompts_dir = args.get("backbone"), args.get("prompts_dir")
    max_length = int(args["max_length"]) if args.get("max_length") else None
    eval_mode, precision = args.get("eval_mode"), args.get("precision")
    fallback = str(args.get("precision_fallback", "")).lower() in ("1", "true", "yes")
    cache_mb = float(args["prefix_cache_mb"]) if args.get("prefix_cache_mb") else None

    def load():  # says its precision on the replica's stderr (Ray's worker log; the driver's with log_to_driver)
        from ept.serving.server import build_server, find_exports, load_prompts

        return build_server(load_prompts(find_exports(prompts, prompts_dir), labels), backbone, max_length, eval_mode,
                            precision=precision, precision_fallback=fallback, prefix_cache_mb=cache_mb)

    from ept.serving.server import find_exports, load_prompts

    load_prompts(find_exports(prompts, prompts_dir), labels)  # a bad folder or label set fails here, not in N replicas
    return load


def build(args: dict):
    """Ray Serve application builder (`serve run ept.serving.ray_app:build key=value ...`)."""
    from ray import serve

    from ept.serving.http_app import PromptLog, ServeConfig, create_app, read_token

    config = ServeConfig(max_batch=int(args.get("max_batch", 32)), max_wait_ms=float(args.get("max_wait_ms", 5)),
                         max_queue=int(args.get("max_queue", 1024)),
                         max_body_bytes=int(args.get("max_body_bytes", 1 << 20)),
                         token=read_token(args.get("token_file")), eval_mode=args.get("eval_mode"),
                         prompt_log=RayPromptLog(LOG_DEPLOYMENT),
                         sync_seconds=float(args.get("sync_seconds", 1)),
                         allowed_paths=tuple(filter(None, [args.get("prompts_dir"),
                                                           *_pairs(str(args.get("prompt", "")), ",").values(),
                                                           *str(args.get("allow_path", "")).split(",")])))
    load = _loader(args)

    def make_app():  # runs inside each replica: its own app, model and worker thread
        return create_app(config, load=load)

    log = serve.deployment(PromptLog, name=LOG_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})

    @serve.deployment(num_replicas=int(args.get("replicas", 1)),
                      ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))})
    @serve.ingress(make_app)
    class EptServe:
        def __init__(self, prompt_log):
            # Bound here only so that the log is part of this application (started and deleted with
            # it); the app reaches it by name (`RayPromptLog`), as its builder cannot see `self`.
            self.prompt_log = prompt_log

    return EptServe.bind(log.bind(args.get("prompt_log") or None))
