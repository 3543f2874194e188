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
import hmac
import math
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from ept.serving.batcher import DynamicBatcher, QueueFull
from ept.serving.server import TaskNotServed

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
            raise ValueError('give exactly one of "inputs" (the task\'s fields by name), "fields" (a non-empty list of '
                             'strings), "text" (a one-field task) or "source" (an already formatted input)')
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


class Service:
    """The server, its lock, the batcher and the metrics; what the routes call."""

    def __init__(self, server, config: ServeConfig):
        self.server, self.config = server, config
        self.lock = threading.Lock()  # a backbone pass, or a prompt change: never both
        self.metrics = Metrics(self)
        self.batcher = DynamicBatcher(self.run_batch, config.max_batch, config.max_wait_ms, config.max_queue,
                                      on_batch=self._observe)

    def _observe(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_seconds.observe(seconds)

    def run_batch(self, requests: list[list[dict]]) -> list:
        """Worker thread: tokenise each request (a bad one fails alone), then ONE pass for all."""
        with self.lock:
            out: list = [None] * len(requests)
            prepared = {}
            for i, rows in enumerate(requests):
                try:
                    prepared[i] = self.server.prepare(rows)
                except Exception as err:
                    out[i] = err
            try:
                flat = [f for feats in prepared.values() for f in feats]
                results = iter(self.server.predict(flat, batch_size=self.config.max_batch))
                for i, feats in prepared.items():
                    out[i] = [next(results) for _ in feats]
            except Exception:  # a request broke the pass: re-run each alone so the others still get answers
                for i, feats in prepared.items():
                    try:
                        out[i] = self.server.predict(feats, batch_size=self.config.max_batch)
                    except Exception as err:
                        out[i] = err
        for result in out:
            for r in result if isinstance(result, list) else ():
                self.metrics.rows.labels(r["task"]).inc()
        return out

    def put_prompt(self, name: str, prompt, labels, eval_mode, meta: dict) -> dict:
        from ept.serving.server import spec_for

        spec = spec_for(name, meta, labels)
        with self.lock:
            task = self.server.add_task(name, prompt, spec, eval_mode=eval_mode, replace=True, meta=meta)
        return task.describe()

    def delete_prompt(self, name: str) -> None:
        with self.lock:
            self.server.remove_task(name)


# ---------------------------------------------------------------------- the app
def _auth(request: Request) -> None:
    token = request.app.state.config.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})


def _service(request: Request) -> Service:
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
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "malformed JSON body: " + "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in errors)},
                            status_code=400)
    detail = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": [{"field": _field(e["loc"]), "message": e["msg"]} for e in errors]},
                        status_code=422)


class _Guard:
    """ASGI middleware: refuse bodies over the limit (413) and count every response by route."""

    def __init__(self, app, config: ServeConfig, metrics_of):
        self.app, self.limit, self.metrics_of = app, config.max_body_bytes, metrics_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        code = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a chunked body with no Content-Length
                raise HTTPException(413, f"request body over --max-body-bytes {self.limit}")
            return message

        length = dict(scope.get("headers", ())).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.limit:
                response = JSONResponse({"detail": f"request body is {int(length)} bytes; --max-body-bytes is {self.limit}"}, 413)
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive_limited, send_status)
        finally:
            metrics = self.metrics_of()
            if metrics is not None:
                path = scope.get("path", "")
                route = "/v1/prompts/{name}" if path.startswith("/v1/prompts/") else path
                metrics.requests.labels(route if route in ROUTES else "other", str(code[0])).inc()


ROUTES = ("/v1/predict", "/v1/prompts", "/v1/prompts/{name}", "/healthz", "/metrics")


def create_app(config: ServeConfig, server=None, load=None) -> FastAPI:
    """The FastAPI app over `server`, or over `load()`'s server, called at startup in the process
    that serves (a Ray Serve replica builds its own model this way)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend = server if server is not None else await run_in_threadpool(load)
        app.state.service = Service(backend, config)
        yield
        # SIGTERM: uvicorn has stopped accepting and waited for in-flight requests; finish the queue
        await run_in_threadpool(app.state.service.batcher.close)

    app = FastAPI(title="ept serve", lifespan=lifespan, version="1",
                  description="Many task prompts on one frozen backbone; rows of any mix of tasks are batched together.")
    app.state.config = config
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(_Guard, config=config, metrics_of=lambda: getattr(getattr(app.state, "service", None), "metrics", None))
    _routes(app)
    return app


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
              responses={404: {"description": "unknown task"}, 413: {"description": "body too large"},
                         429: {"description": "queue full; see Retry-After"}})
    async def predict(body: PredictRequest, service: Service = Depends(_service)):
        """Score rows of any mix of loaded tasks; predictions come back in input order."""
        start = time.monotonic()
        rows = [r.as_row() for r in body.rows]
        loaded = service.server.tasks
        for i, row in enumerate(rows):
            if row["task"] not in loaded:
                raise HTTPException(404, f"rows[{i}].task: {row['task']!r} is not loaded; loaded: {_names(loaded)}")
        if len(rows) > config.max_queue:
            raise HTTPException(413, f"{len(rows)} rows; --max-queue is {config.max_queue}: split the request")
        try:
            future = service.batcher.submit(rows)
        except QueueFull as err:
            raise HTTPException(429, str(err), headers={"Retry-After": str(math.ceil(err.retry_after))}) from None
        except RuntimeError as err:
            raise HTTPException(503, str(err)) from None
        try:
            results = await asyncio.wrap_future(future)
        except Exception as err:
            raise HTTPException(_status_of(err), str(err)) from None
        service.metrics.latency.observe(time.monotonic() - start)
        return {"predictions": results}

    @app.get("/healthz")
    async def healthz(service: Service = Depends(_service)):
        return {"status": "ok", "prompts": len(service.server.tasks), "queued_rows": service.batcher.queued_rows,
                "pid": os.getpid()}  # which replica answered, behind a load balancer

    @app.get("/metrics", dependencies=auth)
    async def metrics(service: Service = Depends(_service)):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _prompt_routes(app, auth, config)


def _prompt_routes(app: FastAPI, auth: list, config: ServeConfig) -> None:
    @app.get("/v1/prompts", dependencies=auth)
    async def list_prompts(service: Service = Depends(_service)):
        """The loaded tasks: method, backbone, e, number of prompt tokens, label words."""
        return {"prompts": [t.describe() for t in list(service.server.tasks.values())]}

    @app.put("/v1/prompts/{name}", dependencies=auth, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": PromptSource.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": "prompt.safetensors bytes; ?labels=w1,w2[&num_tokens=N]"}}}}})
    async def put_prompt(name: str, request: Request, service: Service = Depends(_service)):
        """Load or replace task `name`; the next backbone pass uses it (no restart)."""
        if not NAME.match(name):
            raise HTTPException(422, f"prompt name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/octet-stream"):
                prompt, meta, labels, eval_mode = _uploaded(body, request.query_params)
            else:
                source = PromptSource.model_validate_json(body)
                from ept.checkpoint import load_exported

                config.check_path(source.path)
                prompt, meta = await run_in_threadpool(load_exported, source.path)
                labels, eval_mode = source.labels, source.eval_mode or config.eval_mode
            info = await run_in_threadpool(service.put_prompt, name, prompt, labels, eval_mode, meta)
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
            await run_in_threadpool(service.delete_prompt, name)
        except TaskNotServed:
            raise HTTPException(404, f"prompt {name!r} is not loaded; loaded: {_names(service.server.tasks)}") from None
        return {"deleted": name}


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
    uvicorn.run(create_app(config, server), host=host, port=port, log_level="info", timeout_graceful_shutdown=None)
    return 0


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
