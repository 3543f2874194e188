"""`ept serve`: score rows of many tasks with one frozen backbone, mixed in the same batches.

Batch mode (a JSONL file in, a JSONL file out):

    ept serve --prompt sst2=runs/sst2-ept/export --prompt rte=runs/rte-pt/export --input rows.jsonl
    ept serve --prompt mine=export/ --labels mine=bad,good --input - < rows.jsonl > preds.jsonl

HTTP mode (a FastAPI service with dynamic batching across callers; README "Serving over HTTP"):

    ept serve --http --prompt sst2=runs/sst2-ept/export --port 8000
    ept serve --http --prompts-dir exports/ --token-file token.txt --host 0.0.0.0

Each input row is {"task": NAME} plus its input given one way: "inputs" ({field: text}, the task's
fields by name), "fields" (the same, in the task's order), "text" (a one-field task) or "source" (an
input already formatted, used as it is). Rows are rendered exactly as in training on every backbone
(encoders: the fields; seq2seq and decoder-only: the run's template and answer cue). Each result
is the row's task plus "prediction" (label index, number, or generated text with --eval-mode
generate), "label" (the label word; null when generation produced none) and "scores" (one per
label; not with generation), in input order.

A prompt's label set comes from `--labels NAME=w1,w2,...`, else from the task the export was
trained on (a task file's spec travels in the export), else the registered task named NAME (`ept ls`). The backbone is the one the
exports name (they must agree) unless --backbone.
"""

from __future__ import annotations

import argparse
import json
import sys

from ept.flags import positive_int

EXAMPLES = """examples:
  ept serve --prompt sst2=runs/sst2-ept/export --prompt rte=runs/rte-pt/export --input rows.jsonl
  echo '{"task": "mine", "text": "a gem"}' | ept serve --prompt mine=export/ --labels mine=bad,good --input -
  ept serve --http --prompt sst2=runs/sst2-ept/export --port 8000"""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < (0 if kind is float else 1):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'>= 0' if kind is float else '>= 1'}")
        return value
    return parse


def register(sub) -> None:
    p = sub.add_parser("serve", help="score mixed-task rows with many exported prompts on one backbone (JSONL or HTTP)",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", default=[], metavar="NAME=EXPORT_DIR",
                   help="a task name and its `ept export` folder; repeat for every task")
    p.add_argument("--prompts-dir", default=None, metavar="DIR",
                   help="serve every export under DIR: DIR/NAME/prompt.json or DIR/NAME/export/prompt.json")
    p.add_argument("--labels", action="append", default=[], metavar="NAME=W1,W2,...",
                   help="label words of a prompt whose NAME is not a registered task")
    p.add_argument("--backbone", default=None, help="override the backbone the exports name")
    p.add_argument("--eval-mode", default=None, choices=("rank", "generate"), help="seq2seq and causal classification: rank (default) | generate (an encoder has rank only)")
    p.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                   help="causal backbones: recompute each prompt's keys/values every pass instead of once per task")
    p.add_argument("--max-length", type=positive_int, default=None, help="max input tokens (default: each task's, else 256)")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                   help="compute precision (default: the one the exports were validated in, recorded by `ept export`; "
                        "fp32 for exports that record none); printed at start")
    p.add_argument("--precision-fallback", action="store_true",
                   help="with --precision bf16/fp16 on hardware without it: fp32 with a warning instead of an error")
    p.add_argument("--prefix-cache-mb", type=_positive(float), default=None, metavar="MB",
                   help="causal backbones: most MiB of cached prompt keys/values, least recently used evicted and "
                        "recomputed on next use (default: a quarter of the machine's memory)")
    batch = p.add_argument_group("batch mode")
    batch.add_argument("--input", default=None, help="jsonl rows, or - for stdin (a UTF-8 BOM is fine)")
    batch.add_argument("--output", default="-", help="jsonl predictions, or - for stdout (default)")
    batch.add_argument("--batch-size", type=positive_int, default=64, help="rows per backbone pass (any mix of tasks)")
    http = p.add_argument_group("HTTP mode")
    http.add_argument("--http", action="store_true", help="run an HTTP server instead of reading --input")
    http.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    http.add_argument("--max-batch", type=positive_int, default=32, help="most rows per backbone pass (default 32)")
    http.add_argument("--max-wait-ms", type=_positive(float), default=5.0, help="longest wait for a pass to fill (default 5)")
    http.add_argument("--max-queue", type=positive_int, default=1024, help="rows waiting before 429 (default 1024)")
    http.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="request body limit, 413 above (default 1 MiB)")
    http.add_argument("--token-file", default=None, help="file holding a bearer token every request must send")
    http.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                      help="PUT /v1/prompts/NAME {\"path\": ...} may also load exports under DIR (default: only "
                           "under --prompts-dir and the --prompt folders); repeatable")
    http.add_argument("--prompt-log", default=None, metavar="FILE",
                      help="keep the prompts PUT/DELETE over HTTP (uploads too) in FILE: a restarted server "
                           "replays it and serves them again (default: they live as long as the process)")
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
        if name in out:
            raise ValueError(f"{flag}: {name!r} given twice")
        out[name] = value
    return out


def label_words(labels: list[str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, value in _pairs(labels, "--labels").items():
        words = tuple(w.strip() for w in value.split(","))
        if any(not w for w in words):
            raise ValueError(f"--labels {name}={value!r}: an empty label word; give comma-separated non-empty words")
        out[name] = words
    return out


def _read_rows(path: str) -> list[dict]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8-sig").read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    rows = []
    for i, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {i}: not JSON ({err.msg})") from None
    return rows


def _check_rows(rows: list, names) -> None:
    """Each row's shape and task name before any weights load (`parse_row` reads the fields later,
    against the task)."""
    from ept.serving.server import RowError, row_input_key, row_task

    for i, row in enumerate(rows):
        task = row_task(row, i)
        if not isinstance(task, str) or task not in names:
            raise RowError(i, f"task {task!r} has no --prompt; prompts: {', '.join(names)}")
        row_input_key(row, i)


def run(args) -> int:
    from ept.serving.server import build_server, find_exports, load_prompts

    if not args.prompt and not args.prompts_dir:
        raise ValueError("give at least one --prompt NAME=EXPORT_DIR or --prompts-dir DIR")
    folders = find_exports(_pairs(args.prompt, "--prompt"), args.prompts_dir)
    loaded = load_prompts(folders, label_words(args.labels))  # fail before loading weights
    if args.http and args.input is not None:
        raise ValueError("--input is for batch mode; with --http, clients POST rows to /v1/predict")
    if args.http:
        from ept.serving.http_app import PromptLog, ServeConfig, read_token, serve_forever

        token = read_token(args.token_file)
        if args.host not in (None, "127.0.0.1", "localhost", "::1") and token is None:
            print(f"ept serve: warning: binding {args.host} without --token-file: anyone who reaches it can call it", file=sys.stderr)
        config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_body_bytes=args.max_body_bytes, token=token, eval_mode=args.eval_mode,
                             allowed_paths=tuple(map(str, [*([args.prompts_dir] if args.prompts_dir else []),
                                                           *folders.values(), *args.allow_path])),
                             prompt_log=PromptLog(args.prompt_log) if args.prompt_log else None)
        _check_port(args.host or "127.0.0.1", args.port)  # before the model loads, not after
        server = build_server(loaded, args.backbone, args.max_length, args.eval_mode, args.prefix_cache, args.precision,
                              args.precision_fallback, prefix_cache_mb=args.prefix_cache_mb)
        return serve_forever(server, config, args.host or "127.0.0.1", args.port)
    if args.input is None:
        raise ValueError("batch mode needs --input FILE (or - for stdin); or pass --http to run a server")
    rows = _read_rows(args.input)
    _check_rows(rows, list(folders))
    server = build_server(loaded, args.backbone, args.max_length, args.eval_mode, args.prefix_cache, args.precision,
                          args.precision_fallback, prefix_cache_mb=args.prefix_cache_mb)
    results = server.score(rows, batch_size=args.batch_size)
    # allow_nan=False: the output is standard JSON (the kinds already refuse non-finite scores)
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in results)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        from ept.checkpoint import atomic_write_text

        atomic_write_text(args.output, text)
    return 0


def _check_port(host: str, port: int) -> None:
    """An OSError naming the address when another process listens there. Bound the way uvicorn
    binds (SO_REUSEADDR), so a port in TIME_WAIT passes as it would for uvicorn; the port is free
    again at once (a race with another starter stays possible, and then uvicorn reports it)."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise OSError(f"--host {host}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            raise OSError(f"cannot listen on {host}:{port} ({err.strerror}): another server uses it? "
                          f"pick another --port (0 picks a free one)") from None

