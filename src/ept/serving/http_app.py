"""`ept serve --http`: a FastAPI service over one `MultiTaskServer`, with dynamic batching.

    POST   /v1/predict          {"rows": [{"task": NAME, "inputs": {FIELD: "...", ...}} | {"task": NAME, "fields": [...]}
                                          | {"task": NAME, "text": "..."} (a one-field task) | {"task": NAME, "source": "..."}]}
    GET    /v1/prompts          the loaded tasks
    PUT    /v1/prompts/{name}   load or replace a prompt: JSON {"path": EXPORT_DIR, "labels": [...]} (a folder
                                under --prompts-dir, a --prompt folder or --allow-path; else 403), or
                                the raw bytes of a prompt.safetensors (application/octet-stream) with
                                ?labels=w1,w2 -- effective for the next backbone pass, no restart
    DELETE /v1/prompts/{name}
    GET    /healthz, /metrics (Prometheus text), /docs (OpenAPI)

The event loop only validates, queues and answers: the model runs on the `DynamicBatcher`'s
worker thread, in passes of up to --max-batch rows of any mix of tasks from any callers. Prompt
changes take the same lock as a pass, so a pass never sees a half-changed bank. Status codes:
400 malformed JSON; 422 a row of the wrong shape (the field is named); 404 an unknown task (the
loaded ones are named); 413 a body over --max-body-bytes or more rows than --max-queue; 429 with
Retry-After when the queue is full; 401 a missing or wrong bearer token (/healthz is open).
One bad request never fails the others in its pass: a pass that raises is re-run per request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from ept.serving.batcher import DynamicBatcher, QueueFull
from ept.serving.server import ONE_INPUT, TaskNotServed

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REQUEST_ID, REQUEST_ID_TEXT = "ept.request_id", re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # scope key; a caller's id we keep
log, access = logging.getLogger("ept.serve"), logging.getLogger("ept.serve.access")


@dataclass
class ServeConfig:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_body_bytes: int = 1 << 20
    token: str | None = None
    eval_mode: str | None = None  # prompts added over HTTP: rank | generate (seq2seq and causal)
    # Folders a PUT {"path": ...} may load exports from (each with everything under it): by default
    # --prompts-dir and the --prompt folders, so a caller cannot make the server read any folder it can.
    allowed_paths: tuple[str, ...] = ()
    # replicas (ept.serving.ray_app): the shared log of prompt changes every replica follows, and how often
    # async record(name, change) -> (epoch, version), since(version, epoch) -> (epoch, [(version, name, change)])
    prompt_log: object = None
    sync_seconds: float = 1.0

    def check_path(self, path: str) -> None:
        """PermissionError unless `path` (symlinks resolved) is one of `allowed_paths` or under one."""
        real = Path(os.path.realpath(path))
        roots = [Path(os.path.realpath(r)) for r in self.allowed_paths]
        if not any(real == root or root in real.parents for root in roots):
            where = ", ".join(map(str, roots)) or "(none: the server was started without --prompts-dir)"
            raise PermissionError(f"path {path!r} is outside the folders this server loads exports from: {where}; "
                                  f"start it with --prompts-dir DIR or --allow-path DIR, or upload the prompt.safetensors")


# ---------------------------------------------------------------------- request / response bodies
class Row(BaseModel):
    """One row: its task and its input given ONE way (`ept.serving.server.parse_row`): "inputs" (the task's
    fields by name), "fields" (in the task's field order), "text" (a one-field task) or "source"
    (an already formatted input, used as it is)."""
    model_config = ConfigDict(extra="forbid")
    task: StrictStr
    inputs: dict[StrictStr, Union[StrictStr, int]] | None = Field(None, min_length=1)
    fields: list[StrictStr] | None = Field(None, min_length=1)
    text: StrictStr | None = None
    source: StrictStr | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if sum(getattr(self, k) is not None for k in ("inputs", "fields", "text", "source")) != 1:
            raise ValueError(ONE_INPUT)
        return self

    def as_row(self) -> dict:
        key = next(k for k in ("inputs", "fields", "text", "source") if getattr(self, k) is not None)
        return {"task": self.task, key: getattr(self, key)}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[Row] = Field(min_length=1)


class Prediction(BaseModel):
    task: str
    label: str | None = None
    prediction: Union[int, float, str]
    scores: list[float] | None = None


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class PromptSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: StrictStr = Field(description="an `ept export` folder on the server")
    labels: list[StrictStr] | None = Field(None, description="label words; default: the export's registered task")
    eval_mode: Literal["rank", "generate"] | None = None


# ---------------------------------------------------------------------- the service
class Metrics:
    def __init__(self, service):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("ept_requests", "HTTP requests by route and status", ["route", "code"], registry=r)
        self.rows = Counter("ept_rows", "rows scored, by task", ["task"], registry=r)
        self.batch_rows = Histogram("ept_batch_rows", "rows per backbone pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.batch_seconds = Histogram("ept_batch_seconds", "seconds per backbone pass", registry=r)
        self.latency = Histogram("ept_predict_seconds", "POST /v1/predict latency", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        Gauge("ept_queue_rows", "rows waiting for a pass", registry=r).set_function(lambda: service.batcher.queued_rows)
        Gauge("ept_prompts_loaded", "task prompts served", registry=r).set_function(lambda: len(service.server.tasks))
        r.register(_PrefixCacheCollector(service))


class _PrefixCacheCollector:
    """The causal prompt-KV cache (ept.kinds.prefixcache) in /metrics: size, cap, entries, lookups by
    result, hit ratio, evictions. Nothing for a server without one."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cache = self.service.server.prefix_cache
        if cache is None:
            return
        yield GaugeMetricFamily("ept_prefix_cache_bytes", "bytes of cached prompt keys/values", value=cache.nbytes)
        yield GaugeMetricFamily("ept_prefix_cache_cap_bytes", "--prefix-cache-mb in bytes", value=cache.cap)
        yield GaugeMetricFamily("ept_prefix_cache_entries", "tasks whose prompt cache is held", value=len(cache))
        lookups = CounterMetricFamily("ept_prefix_cache_lookups", "a pass's tasks looked up in the cache", labels=["result"])
        lookups.add_metric(["hit"], cache.hits)
        lookups.add_metric(["miss"], cache.misses)
        yield lookups
        total = cache.hits + cache.misses
        yield GaugeMetricFamily("ept_prefix_cache_hit_ratio", "hits / lookups so far", value=cache.hits / total if total else 0.0)
        yield CounterMetricFamily("ept_prefix_cache_evictions", "caches evicted (recomputed on next use)", value=cache.evictions)


class Service:
    """The server, its lock, the batcher and the metrics; what the routes call."""

    def __init__(self, server, config: ServeConfig):
        self.server, self.config = server, config
        self.lock = threading.Lock()  # a backbone pass, or a prompt change: never both
        self.metrics = Metrics(self)
        self.follower = None  # set by the app when replicas share a PromptLog
        self.batcher = DynamicBatcher(self.run_batch, config.max_batch, config.max_wait_ms, config.max_queue,
                                      on_batch=self._observe)

    def _observe(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_seconds.observe(seconds)

    def run_batch(self, requests: list[list[dict]], ids: list) -> list:
        """Worker thread: validate and tokenise every request's rows in ONE call (one tokenizer
        call per pass, not per request), then ONE backbone pass for all. A bad request fails alone:
        on any error the pass is redone request by request, so the others still get answers."""
        with self.lock:
            try:
                flat = self.server.prepare([row for rows in requests for row in rows])
                results = self.server.predict(flat, batch_size=self.config.max_batch)
                out, start = [], 0
                for rows in requests:
                    out.append(results[start:start + len(rows)])
                    start += len(rows)
            except Exception as err:
                log.warning("a pass of %d requests failed (%s: %s); re-running them one by one: %s",
                            len(requests), type(err).__name__, err, " ".join(map(str, ids)))
                out = [self._alone(rows) for rows in requests]
        counts = Counter(r["task"] for result in out if isinstance(result, list) for r in result)
        for task, n in counts.items():  # one counter update per task and pass, not per row
            self.metrics.rows.labels(task).inc(n)
        return out

    def _alone(self, rows: list[dict]):
        try:
            return self.server.predict(self.server.prepare(rows), batch_size=self.config.max_batch)
        except Exception as err:
            return err

    def put_prompt(self, name: str, prompt, labels, eval_mode, meta: dict) -> dict:
        from ept.serving.server import spec_for

        spec = spec_for(name, meta, labels)
        with self.lock:
            self.server.add_task(name, prompt, spec, eval_mode=eval_mode, replace=True, meta=meta)
            info = self.server.describe(name)
        validated = meta.get("precision")
        if validated and validated != self.server.precision:  # served anyway: one backbone, one precision
            info["warning"] = (f"prompt {name!r} was validated in {validated}; this server computes in "
                               f"{self.server.precision}, so its scores may differ from the run's")
            log.warning(info["warning"])
        return info

    def delete_prompt(self, name: str) -> None:
        with self.lock:
            self.server.remove_task(name)

    def apply(self, name: str, change: dict | None) -> dict | None:
        """One prompt change, as PUT/DELETE make it and the replicas' log replays it: None
        deletes; else the PUT's body (an export path as JSON, or prompt.safetensors bytes with
        its query) loads or replaces the prompt. Returns what /v1/prompts shows for it."""
        if change is None:
            self.delete_prompt(name)
            return None
        if change["content_type"].startswith("application/octet-stream"):
            prompt, meta, labels, eval_mode = _uploaded(change["body"], change["query"])
        else:
            from ept.checkpoint import load_exported

            source = PromptSource.model_validate_json(change["body"])
            self.config.check_path(source.path)  # PermissionError (403) outside --prompts-dir / --allow-path
            prompt, meta = load_exported(source.path)
            labels, eval_mode = source.labels, source.eval_mode or self.config.eval_mode
        return self.put_prompt(name, prompt, labels, eval_mode, meta)


class PromptLog:
    """The one source of truth for prompt changes across replicas: name -> its latest change and
    the version that made it (older changes of a name are dropped: replaying the latest of each,
    in version order, gives the same prompts). In-process here; a Ray actor in ept.serving.ray_app.

    `epoch` names this log's life: a log restarted (its Ray replica died) is empty again and counts
    from version 1, so versions alone would tell a replica that has applied up to N to skip the new
    log's changes 1..N. A caller names the epoch it has followed; another epoch is replayed from 0.

    `path` keeps it across restarts (`ept serve --http --prompt-log FILE`, Ray's prompt_log=FILE on
    storage every node sees): each change is appended as one JSON line and fsynced before the PUT
    or DELETE answers; a log started on the file reads it back with its epoch and versions, so
    replicas go on where they were and a server restarted with the same file serves its uploads
    again. Written by hand: a few lines of JSON, no database is needed for one writer."""

    # The file is rewritten compacted once it holds this many superseded lines and at least as many
    # superseded as live ones: a server that replaces its prompts all day keeps a file of about
    # twice its prompts, and the rewrite's cost is spread over that many appends.
    compact_after = 256

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else None
        self.epoch, self.version, self.latest = secrets.token_hex(8), 0, {}
        self.lines = 0  # change lines in the file; those beyond len(self.latest) are superseded
        if self.path is not None:
            self._load()

    async def record(self, name: str, change: dict | None) -> tuple[str, int]:
        version = self.version + 1
        if self.path is not None:  # on disk first: a change the file lacks is never served as recorded
            with self.path.open("a") as f:
                f.write(json.dumps({"version": version, "name": name, "change": _change_json(change)}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.lines += 1
        self.version = version
        self.latest[name] = (version, change)
        superseded = self.lines - len(self.latest)
        if self.path is not None and superseded >= max(self.compact_after, len(self.latest)):
            self._compact()
        return self.epoch, version

    async def since(self, version: int, epoch: str | None = None) -> tuple[str, list]:
        """(this log's epoch, its changes after `version` of `epoch`: all of them for another epoch)."""
        after = version if epoch == self.epoch else 0
        return self.epoch, sorted((v, name, change) for name, (v, change) in self.latest.items() if v > after)

    def _load(self) -> None:
        """Read the file back (a last line cut short by a crash is dropped, said in the log), then
        rewrite it compacted to the latest change of each name."""
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            for i, line in enumerate(lines, 1):
                try:
                    entry = json.loads(line)
                    if i == 1:
                        self.epoch = entry["epoch"]
                    else:
                        self.version = entry["version"]
                        self.latest[entry["name"]] = (entry["version"], _change_from_json(entry["change"]))
                except (ValueError, KeyError, TypeError) as err:
                    if i < len(lines):
                        raise ValueError(f"{self.path}:{i}: not a prompt log line ({err}); move the file away "
                                         f"to start an empty log") from None
                    log.warning("%s:%d: last line cut short (a write interrupted); dropped", self.path, i)
        self._compact()

    def _compact(self) -> None:
        """Rewrite the file as its epoch and the latest change of each name, atomically (a crash
        mid-rewrite leaves the old file, which replays to the same prompts)."""
        from ept.atomic_io import atomic_write_text

        entries = [{"epoch": self.epoch}] + [{"version": v, "name": n, "change": _change_json(c)}
                                             for n, (v, c) in sorted(self.latest.items(), key=lambda kv: kv[1][0])]
        atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in entries))
        self.lines = len(self.latest)


def _change_json(change: dict | None) -> dict | None:
    """A change as JSON: its body (the PUT's bytes: an upload or a JSON body) in base64."""
    return None if change is None else {**change, "body": base64.b64encode(change["body"]).decode()}


def _change_from_json(change: dict | None) -> dict | None:
    return None if change is None else {**change, "body": base64.b64decode(change["body"])}


class Follower:
    """Keeps a replica's prompts equal to the replay of the shared `PromptLog`: a PUT/DELETE is
    applied here (its errors answer the caller), then recorded; every `sync_seconds` the replica
    replays what the others recorded, so all replicas agree within about that time (plus one load).
    One asyncio lock orders the two, so a replica always applies the log in version order."""

    def __init__(self, service: Service, log_, every: float):
        self.service, self.log, self.every = service, log_, every
        self.epoch, self.version = None, 0  # the log (its epoch) and its version this replica has applied up to
        self.lock = asyncio.Lock()

    async def change(self, name: str, change: dict | None):
        async with self.lock:
            result = await run_in_threadpool(self.service.apply, name, change)
            epoch, version = await self.log.record(name, change)
            if epoch == self.epoch and version == self.version + 1:
                self.version = version  # nothing else came between: the replay is what we hold
            else:
                await self._catch_up()  # others' changes came first: replay them, then ours, in order
            return result

    async def catch_up(self) -> None:
        async with self.lock:
            await self._catch_up()

    async def _catch_up(self) -> None:
        # A new epoch (the log restarted, empty): its changes are replayed from its first; what this
        # replica already holds stays (a replica started after the restart lacks what came before it).
        epoch, changes = await self.log.since(self.version, self.epoch)
        if epoch != self.epoch:
            self.epoch, self.version = epoch, 0
        for version, name, change in changes:
            try:
                await run_in_threadpool(self.service.apply, name, change)
            except KeyError:
                pass  # a DELETE of a prompt this replica never had
            except Exception as err:  # the replica that took the change answered its caller; log it here
                log.warning("prompt log version %d (%s %r) failed here: %s", version,
                            "DELETE" if change is None else "PUT", name, err)
            self.version = version

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.catch_up()
            except Exception:  # the log's actor restarting, say: try again next round
                log.exception("could not read the prompt log; retrying in %.1f s", self.every)


# ---------------------------------------------------------------------- the app
async def _auth(request: Request) -> None:  # async: a sync dependency costs a thread hop per request
    token = request.app.state.config.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})


async def _service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(503, "the model is still loading")
    return service


def _field(loc) -> str:
    """('body', 'rows', 3, 'text') -> 'rows[3].text'"""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _validation_error(request: Request, exc: RequestValidationError):
    return _validation_response(exc.errors())


def _validation_response(errors: list) -> JSONResponse:
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "malformed JSON body: " + "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in errors)},
                            status_code=400)
    detail = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": [{"field": _field(e["loc"]), "message": e["msg"]} for e in errors]},
                        status_code=422)


class _Guard:
    """ASGI middleware: give every request an id (the caller's X-Request-ID when it is a plain
    token, else a fresh one; echoed in the answer's X-Request-ID and in every log line about the
    request), refuse bodies over the limit (413), count every response by route and write one
    access-log line per request (uvicorn's own access log, which has no ids, is off)."""

    def __init__(self, app, config: ServeConfig, metrics_of):
        self.app, self.limit, self.metrics_of = app, config.max_body_bytes, metrics_of
        self._prefix, self._count = secrets.token_hex(3), itertools.count(1)  # ids unique across replicas

    def _request_id(self, headers: dict) -> str:
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        return given if REQUEST_ID_TEXT.match(given) else f"{self._prefix}-{next(self._count)}"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", ()))
        rid = scope[REQUEST_ID] = self._request_id(headers)
        code, start = [500], time.monotonic()

        async def send_status(message):
            if message["type"] == "http.response.start":
                code[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a chunked body with no Content-Length
                raise HTTPException(413, f"request body over --max-body-bytes {self.limit}")
            return message

        length = headers.get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.limit:
                response = JSONResponse({"detail": f"request body is {int(length)} bytes; --max-body-bytes is {self.limit}"}, 413)
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive_limited, send_status)
        finally:
            path = scope.get("path", "")
            access.info('%s %s "%s %s" %d %.1f ms', rid, (scope.get("client") or ("-",))[0], scope.get("method"), path,
                        code[0], 1000 * (time.monotonic() - start))
            metrics = self.metrics_of()
            if metrics is not None:
                route = "/v1/prompts/{name}" if path.startswith("/v1/prompts/") else path
                metrics.requests.labels(route if route in ROUTES else "other", str(code[0])).inc()


ROUTES = ("/v1/predict", "/v1/prompts", "/v1/prompts/{name}", "/healthz", "/metrics")


def create_app(config: ServeConfig, server=None, load=None) -> FastAPI:
    """The FastAPI app over `server`, or over `load()`'s server, called at startup in the process
    that serves (a Ray Serve replica builds its own model this way)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend = server if server is not None else await run_in_threadpool(load)
        service = app.state.service = Service(backend, config)
        follower = service.follower = Follower(service, config.prompt_log, config.sync_seconds) if config.prompt_log else None
        if follower is not None:
            await follower.catch_up()  # a replica started late gets the changes made before it
            task = asyncio.create_task(follower.follow())
        yield
        if follower is not None:
            task.cancel()
        # SIGTERM: uvicorn has stopped accepting and waited for in-flight requests; finish the queue
        await run_in_threadpool(service.batcher.close)

    app = FastAPI(title="ept serve", lifespan=lifespan, version="1",
                  description="Many task prompts on one frozen backbone; rows of any mix of tasks are batched together.")
    app.state.config = config
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(_Guard, config=config, metrics_of=lambda: getattr(getattr(app.state, "service", None), "metrics", None))
    _routes(app)
    _document(app, PredictRequest)
    return app


def _document(app: FastAPI, *models) -> None:
    """Put request bodies that a route reads itself (no pydantic parameter) into the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = build().setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return app.openapi_schema

    app.openapi = openapi


def _names(tasks, limit: int = 20) -> str:
    names = list(tasks)
    more = f", ... ({len(names)} in all; GET /v1/prompts)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "(none)") + more


def _status_of(err: Exception) -> int:
    if isinstance(err, TaskNotServed):
        return 404  # the task was deleted between the request's check and its pass
    return 422 if isinstance(err, ValueError) else 500


def _routes(app: FastAPI) -> None:
    auth = [Depends(_auth)]
    config: ServeConfig = app.state.config

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=auth,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "$ref": "#/components/schemas/PredictRequest"}}}}},
              responses={404: {"description": "unknown task"}, 413: {"description": "body too large"},
                         429: {"description": "queue full; see Retry-After"}})
    async def predict(request: Request, service: Service = Depends(_service)):
        """Score rows of any mix of loaded tasks; predictions come back in input order.

        The hot path: the body is validated by pydantic-core straight from the bytes, in one call,
        and the answer written by orjson, without a response-model pass (benchmarks/RESULTS.md §6a)."""
        start = time.monotonic()
        try:
            rows = [r.as_row() for r in PredictRequest.model_validate_json(await request.body()).rows]
        except ValidationError as err:
            return _validation_response(err.errors(include_url=False))
        loaded = service.server.tasks
        for i, row in enumerate(rows):
            if row["task"] not in loaded:
                raise HTTPException(404, f"rows[{i}].task: {row['task']!r} is not loaded; loaded: {_names(loaded)}")
        if len(rows) > config.max_queue:
            raise HTTPException(413, f"{len(rows)} rows; --max-queue is {config.max_queue}: split the request")
        try:
            future = service.batcher.submit_async(rows, request.scope.get(REQUEST_ID))
        except QueueFull as err:
            raise HTTPException(429, str(err), headers={"Retry-After": str(math.ceil(err.retry_after))}) from None
        except RuntimeError as err:
            raise HTTPException(503, str(err)) from None
        try:
            results = await future
        except Exception as err:
            raise HTTPException(_status_of(err), str(err)) from None
        service.metrics.latency.observe(time.monotonic() - start)
        return Response(orjson.dumps({"predictions": results}), media_type="application/json")

    @app.get("/healthz")
    async def healthz(service: Service = Depends(_service)):
        return {"status": "ok", "prompts": len(service.server.tasks), "queued_rows": service.batcher.queued_rows,
                "pid": os.getpid(),  # which replica answered, behind a load balancer
                "prompts_version": service.follower.version if service.follower else None}  # replicas: the log version applied

    @app.get("/metrics", dependencies=auth)
    async def metrics(service: Service = Depends(_service)):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _prompt_routes(app, auth, config)


def _prompt_routes(app: FastAPI, auth: list, config: ServeConfig) -> None:
    @app.get("/v1/prompts", dependencies=auth)
    async def list_prompts(service: Service = Depends(_service)):
        """The loaded tasks: method, backbone, precision (served and validated), prompt-cache state,
        e, number of prompt tokens, label words."""
        return {"prompts": [service.server.describe(name) for name in list(service.server.tasks)]}

    @app.put("/v1/prompts/{name}", dependencies=auth, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": PromptSource.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": "prompt.safetensors bytes; ?labels=w1,w2[&num_tokens=N]"}}}}})
    async def put_prompt(name: str, request: Request, service: Service = Depends(_service)):
        """Load or replace task `name`; the next backbone pass uses it (no restart)."""
        if not NAME.match(name):
            raise HTTPException(422, f"prompt name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        change = {"body": await request.body(), "content_type": request.headers.get("content-type", ""),
                  "query": dict(request.query_params)}
        try:
            info = await _change(service, name, change)
        except PermissionError as err:
            raise HTTPException(403, str(err)) from None
        except FileNotFoundError as err:
            raise HTTPException(404, str(err)) from None
        except ValueError as err:  # pydantic's ValidationError, safetensors' and ours
            raise HTTPException(400 if "json_invalid" in str(err) else 422, str(err)) from None
        return {"loaded": info}

    @app.delete("/v1/prompts/{name}", dependencies=auth)
    async def delete_prompt(name: str, service: Service = Depends(_service)):
        """Stop serving task `name` (queued rows of it get 404)."""
        try:
            await _change(service, name, None)
        except KeyError:  # TaskNotServed is one
            raise HTTPException(404, f"prompt {name!r} is not loaded; loaded: {_names(service.server.tasks)}") from None
        return {"deleted": name}


async def _change(service: Service, name: str, change: dict | None):
    """Apply a PUT (change) or DELETE (None) here, and with replicas record it in their log."""
    if service.follower is not None:
        return await service.follower.change(name, change)
    return await run_in_threadpool(service.apply, name, change)


def _uploaded(body: bytes, query) -> tuple:
    """A prompt.safetensors uploaded as raw bytes: (P' (n, e), meta, labels, eval_mode)."""
    from safetensors.torch import load

    try:
        tensors = load(body)
    except Exception as err:  # safetensors raises its own SafetensorError on garbage
        raise ValueError(f"the body is not a safetensors file ({err})") from None
    if "prompt" not in tensors or tensors["prompt"].dim() != 2:
        raise ValueError(f"the safetensors file needs one 2-D tensor 'prompt' (n, e); got {sorted(tensors)}")
    if any(k.startswith("pair_head.") for k in tensors):  # its kind and pooling live in prompt.json
        raise ValueError("this prompt.safetensors holds a siamese pair head: load its export folder with "
                         "{\"path\": ...} (prompt.json says how it scores pairs)")
    prompt = tensors["prompt"].float()
    num_tokens = query.get("num_tokens")
    if num_tokens is not None:
        if not num_tokens.isdigit() or int(num_tokens) < 1 or prompt.shape[0] not in (1, int(num_tokens)):
            raise ValueError(f"num_tokens={num_tokens!r}: must be a positive integer, the prompt's {prompt.shape[0]} rows or 1 broadcast")
        prompt = prompt.expand(int(num_tokens), -1)
    labels = [w.strip() for w in query["labels"].split(",")] if query.get("labels") else None
    return prompt, {"method": "upload"}, labels, query.get("eval_mode")


def serve_forever(server, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Run until SIGTERM/SIGINT; uvicorn then stops accepting, waits for in-flight requests, and
    the app's shutdown finishes the queue."""
    import signal

    import uvicorn

    # uvicorn re-raises the signal it caught once it has shut down cleanly, with the handler that
    # was installed before it: make that a no-op, so a drained server exits 0, not -SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(create_app(config, server), host=host, port=port, log_level="info", timeout_graceful_shutdown=None,
                access_log=False, log_config=log_config())
    return 0


def log_config() -> dict:
    """uvicorn's logging set-up plus ept's loggers on stderr: `ept.serve` (start-up, errors) and
    `ept.serve.access` (one line per request, with its id), in place of uvicorn's access log."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["ept"] = {"()": "logging.Formatter", "fmt": "%(levelname)s:     %(name)s: %(message)s"}
    config["handlers"]["ept"] = {"formatter": "ept", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config["loggers"]["ept"] = {"handlers": ["ept"], "level": "INFO", "propagate": False}
    return config


def read_token(path: str | None) -> str | None:
    """The bearer token in `path` (--token-file), or None without one."""
    if path is None:
        return None
    try:
        token = open(path, encoding="utf-8-sig").read().strip()
    except OSError as err:
        raise FileNotFoundError(f"--token-file {path}: {err.strerror}") from None
    if not token:
        raise ValueError(f"--token-file {path} is empty")
    return token
