"""Load test of `ept serve --http` (issue 11 item 6): one command, loopback, real HTTP clients.

    python benchmarks/bench_serve.py                       # ~5 minutes on 2 cores; prints the tables
    python benchmarks/bench_serve.py --seconds 8 --clients 1 8 32 --tasks 8 1000 --load-prompts 10000

MiniLM; T random EPT task prompts (e = 384, n = 1; half labelled as SST-2, half as RTE) written as
`ept export`-style folders and served with `--prompts-dir`; rows drawn from the real SST-2 and RTE
validation data (`$EPT_DATA_DIR`), each row sent to a random task of its kind. For each T the
server runs in a subprocess (torch on 1 thread, `--max-batch 32 --max-wait-ms 5`), and C asyncio
aiohttp clients send one row per request back to back for `--seconds`, and every answer is checked
against the batch mode's answer for its row. Reported per cell: rows/s, p50/p99 latency, server
CPU per row, the mean backbone pass (time and rows, from the server's /metrics, for the p99
target), the CPU shares of the server, the clients (this process) and everything else on the
machine, the load average; per T: the offline `MultiTaskServer.score` throughput and CPU per row on
the SAME rows in this process (same thread count, same passes of 32), so the ratios HTTP/offline
are from one run (issue 22 targets: rows/s >= 0.8x, server CPU per row <= 1.15x, p99 at 8 clients
<= max-wait + 2 mean passes, for 8 and 1,000 tasks).
Prompt load: `--load-prompts` export folders read and added in-process (time and RSS growth).

    python benchmarks/bench_serve.py --prefix-cache        # ~2 CPU minutes: causal prompt KV cache only

`--prefix-cache` instead compares the offline `MultiTaskServer` on SmolLM2-135M (`ept fetch
smollm2-135m`) with each task's prompt keys/values cached at load (the default) and recomputed in
every pass (`prefix_cache=False`): 4 tasks per configuration (EPT n=1; PT n=10; PT n=100; one task
each of n=1, 10, 100 and 10), real SST-2 validation rows for random tasks, rank classification,
passes of `--prefix-batch` rows tokenised beforehand, both servers interleaved on the same passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, interleaved, machine, median, paired_ratio, table  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_BATCH, MAX_WAIT_MS, MAX_LENGTH = 32, 5.0, 64  # 64 tokens: SST-2 whole, RTE cut (CPU scale)


def rss_mib(pid: int | str = "self") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_exports(root: Path, count: int, e: int = 384, seed: int = 0) -> None:
    """`ept export`-style folders (prompt.safetensors + prompt.json), task t: sst2 if even else rte."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    for t in range(count):
        folder = root / f"t{t:05d}"
        folder.mkdir(parents=True)
        save_file({"prompt": torch.empty(1, e).uniform_(-0.5, 0.5, generator=g)}, str(folder / "prompt.safetensors"))
        (folder / "prompt.json").write_text(json.dumps({
            "backbone": "minilm", "method": "ept", "num_tokens": 1, "embed_dim": e, "broadcast": False,
            "stored_vectors": 1, "inference_params": e, "task": "sst2" if t % 2 == 0 else "rte"}))


def real_rows(tasks: int, n: int, seed: int = 0) -> list[dict]:
    """n rows from SST-2 / RTE validation, alternating, each for a random task of its kind."""
    from ept.tasks import load_task

    sst2 = load_task("sst2", DATA_DIR).validation
    rte = load_task("rte", DATA_DIR).validation
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 2 if tasks > 1 else 0
        ex = (sst2, rte)[kind][rng.randrange(len((sst2, rte)[kind]))]
        task = rng.randrange(kind, tasks, 2) if tasks > 1 else 0
        rows.append({"task": f"t{task:05d}", "fields": list(ex.fields)})
    return rows


def start_server(prompts_dir: Path):
    """The server in a subprocess; its log (one access line per request) goes to a file, so
    reading it costs this process, the clients', no CPU."""
    cmd = [sys.executable, "-m", "ept.cli", "serve", "--http", "--port", "0", "--prompts-dir", str(prompts_dir),
           "--max-batch", str(MAX_BATCH), "--max-wait-ms", str(MAX_WAIT_MS), "--max-length", str(MAX_LENGTH)]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    log = prompts_dir.with_suffix(".log")
    proc = subprocess.Popen(cmd, stderr=open(log, "w"), stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"Uvicorn running on http://[\d.]+:(\d+)", log.read_text())
        if match:
            return proc, f"http://127.0.0.1:{match.group(1)}"
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start (exit {proc.wait()}):\n{log.read_text()[-2000:]}")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (all cores)."""
    values = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK")


async def load_cell(url: str, rows: list[dict], expected: list[dict], clients: int, seconds: float) -> dict:
    """`clients` callers, one row per request, back to back, for `seconds`; every answer is
    checked against the offline answer of the same row (prediction exact, scores to 1e-4).

    aiohttp, not httpx: the clients share the machine with the server, and httpx spends ~6x the
    CPU per request (1.4 against 0.22 ms, measured on loopback): the load generator should take
    as little of it as it can. The client's own CPU is reported."""
    import aiohttp
    import orjson

    latencies, codes, wrong = [], {}, 0
    deadline = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as client:
        async def caller(k: int):
            nonlocal wrong
            i = k
            while time.perf_counter() < deadline:
                j = i % len(rows)
                start = time.perf_counter()
                async with client.post(f"{url}/v1/predict", data=orjson.dumps({"rows": [rows[j]]}), headers=headers) as r:
                    body, status = await r.read(), r.status
                codes[status] = codes.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                    wrong += not same_answer(orjson.loads(body)["predictions"][0], expected[j])
                elif status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                i += clients
        began = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    total = sum(codes.values())
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    return {"rows": len(latencies), "rows_s": len(latencies) / elapsed, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "rate_429": codes.get(429, 0) / max(total, 1), "errors": total - codes.get(200, 0) - codes.get(429, 0),
            "wrong": wrong}


def same_answer(got: dict, want: dict) -> bool:
    """The batch mode's answer: same task, prediction and label; scores equal up to float
    summation order (other rows in a pass change the padding)."""
    return ((got["task"], got["prediction"], got.get("label")) == (want["task"], want["prediction"], want.get("label"))
            and all(abs(a - b) <= 1e-4 for a, b in zip(got["scores"], want["scores"])))


def offline(server, rows: list[dict], seconds: float) -> tuple[float, float]:
    """MultiTaskServer.score on the same rows, passes of MAX_BATCH: (rows/s, CPU ms per row),
    tokenisation included."""
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        chunk = rows[done % len(rows):][:MAX_BATCH]  # one pass of 32, as the HTTP worker at saturation
        server.score(chunk, batch_size=MAX_BATCH)
        done += len(chunk)
    return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / done


def served(backbone, tok, prompts_dir: Path):
    from ept.serving.server import MultiTaskServer, find_exports, load_prompts

    server = MultiTaskServer(backbone, tok, max_length=MAX_LENGTH)
    for name, (prompt, meta, spec) in load_prompts(find_exports(prompts_dir=str(prompts_dir))).items():
        server.add_task(name, prompt, spec).meta = meta
    return server


def metric_pair(url: str) -> tuple[float, float, float]:
    """(seconds in passes, passes, rows in passes) so far, from the server's /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics").text
    return tuple(float(re.search(rf"^{name} (\S+)", text, re.M).group(1))
                 for name in ("ept_batch_seconds_sum", "ept_batch_seconds_count", "ept_batch_rows_sum"))


def run_cell(url: str, pid: int, rows, expected, clients: int, seconds: float) -> dict:
    """One load cell with the CPU of everyone on the machine: the server process, this process
    (the clients) and the rest (other jobs), as shares of the machine's cores."""
    before, cpu, own, (busy, wall) = metric_pair(url), cpu_seconds(pid), time.process_time(), machine_busy()
    cell = asyncio.run(load_cell(url, rows, expected, clients, seconds))
    after, cpu, own = metric_pair(url), cpu_seconds(pid) - cpu, time.process_time() - own
    busy, wall = (b - a for a, b in zip((busy, wall), machine_busy()))
    cell["cpu_ms_row"] = 1000 * cpu / max(cell["rows"], 1)  # the server's CPU per row: less load-dependent than rows/s
    cell["pass_ms"] = 1000 * (after[0] - before[0]) / max(after[1] - before[1], 1)
    cell["pass_rows"] = (after[2] - before[2]) / max(after[1] - before[1], 1)
    cell["client_cpu_ms_row"] = 1000 * own / max(cell["rows"], 1)
    cell["server_share"], cell["client_share"] = cpu / wall, own / wall  # of the machine's cores (1 = all busy)
    cell["others_share"] = max(0.0, (busy - cpu - own) / wall)
    cell["load"] = os.getloadavg()[0]
    cell["rss_mib"] = rss_mib(pid)
    return cell


def bench_http(args, root: Path, backbone, tok) -> tuple[list, dict]:
    """Every T's server up at once; cells interleaved (rep -> clients -> T in rotating order) and
    an offline measurement per T in every rep, so drift in the machine's load hits all alike."""
    import signal

    import httpx

    servers, rows, offline_servers, expected = {}, {}, {}, {}
    try:
        for T in args.tasks:
            write_exports(root / str(T), T)
            rows[T] = real_rows(T, args.rows)
            servers[T] = start_server(root / str(T))
            for r in rows[T][:MAX_BATCH]:  # warm-up: first passes, the bank's table
                httpx.post(f"{servers[T][1]}/v1/predict", json={"rows": [r]}, timeout=120).raise_for_status()
            offline_servers[T] = served(backbone, tok, root / str(T))
            with torch.inference_mode():  # the batch mode's answers, to check every HTTP answer against
                expected[T] = offline_servers[T].score(rows[T], batch_size=MAX_BATCH)
        cells, rates = {}, {T: [] for T in args.tasks}
        for rep in range(args.reps):
            order = args.tasks if rep % 2 == 0 else args.tasks[::-1]
            for C in args.clients:
                for T in order:
                    cell = run_cell(servers[T][1], servers[T][0].pid, rows[T], expected[T], C, args.seconds)
                    cells.setdefault((T, C), []).append(cell)
                    print(f"rep {rep} T={T} C={C}: " + ", ".join(f"{k} {v:.2f}" for k, v in cell.items()), flush=True)
            for T in order:
                with torch.inference_mode():
                    rates[T].append(offline(offline_servers[T], rows[T], args.seconds))
                print(f"rep {rep} T={T}: offline MultiTaskServer {rates[T][-1][0]:.1f} rows/s, "
                      f"{rates[T][-1][1]:.1f} CPU ms/row, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    med = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2  # noqa: E731
    table_cells = [{"tasks": T, "clients": C, **{k: med([c[k] for c in cs]) for k in cs[0]},
                    "wrong": sum(c["wrong"] for c in cs), "answered": sum(c["rows"] for c in cs)} for (T, C), cs in cells.items()]
    offline_med = {T: (med([r for r, _ in v]), med([c for _, c in v])) for T, v in rates.items()}
    return sorted(table_cells, key=lambda c: (c["tasks"], c["clients"])), offline_med


def report_http(args, cells: list[dict], offline_rates: dict, path_ms: float) -> None:
    """The table and the issue-22 targets, every ratio from this one run."""
    print(f"\nMiniLM, one row per request, --max-batch {MAX_BATCH} --max-wait-ms {MAX_WAIT_MS:g}, {args.seconds:g} s per "
          f"cell, median of {args.reps} interleaved reps, torch 1 thread in server and offline; shares are of all "
          f"{os.cpu_count()} cores (server process, the clients = this process, everything else on the machine)\n")
    table(["tasks", "clients", "rows/s", "p50 ms", "p99 ms", "mean pass ms", "rows/pass", "HTTP/offline rows/s",
           "server CPU ms/row", "offline CPU ms/row", "server/offline CPU per row", "client CPU ms/row",
           "server share", "client share", "others' share", "load", "wrong answers"],
          [[c["tasks"], c["clients"], c["rows_s"], c["p50_ms"], c["p99_ms"], c["pass_ms"], c["pass_rows"],
            c["rows_s"] / offline_rates[c["tasks"]][0], c["cpu_ms_row"], offline_rates[c["tasks"]][1],
            c["cpu_ms_row"] / offline_rates[c["tasks"]][1], c["client_cpu_ms_row"], c["server_share"],
            c["client_share"], c["others_share"], c["load"], f"{c['wrong']}/{c['answered']}"] for c in cells])
    print()
    for T in args.tasks:
        sat = max((c for c in cells if c["tasks"] == T), key=lambda c: c["rows_s"])
        speed, cpu = sat["rows_s"] / offline_rates[T][0], sat["cpu_ms_row"] / offline_rates[T][1]
        print(f"{T} tasks, saturation ({sat['clients']} clients): HTTP/offline rows/s {speed:.3f} (target >= 0.8: "
              f"{'met' if speed >= 0.8 else 'NOT met'}), server/offline CPU per row {cpu:.3f} (target <= 1.15: "
              f"{'met' if cpu <= 1.15 else 'NOT met'}); offline {offline_rates[T][0]:.1f} rows/s")
    top = {T: max(c["rows_s"] for c in cells if c["tasks"] == T) for T in args.tasks}
    if len(top) > 1:
        lo, hi = min(args.tasks), max(args.tasks)
        print(f"saturated throughput, {hi} tasks / {lo} tasks: {top[hi] / top[lo]:.3f} (target >= 0.95)")
    for c in cells:
        if c["clients"] == 8:
            bound = MAX_WAIT_MS + 2 * c["pass_ms"]
            print(f"p99 at 8 clients, {c['tasks']} tasks: {c['p99_ms']:.1f} ms; max-wait-ms + 2 mean passes = {bound:.1f} ms "
                  f"({'met' if c['p99_ms'] <= bound else 'NOT met'})")
    print(f"answers checked against the batch mode, row by row: {sum(c['wrong'] for c in cells)} wrong of "
          f"{sum(c['answered'] for c in cells)}")
    offline_ms = min(c for _, c in offline_rates.values())
    print(f"the HTTP path alone (in-process ASGI, stub model, no network): {path_ms:.3f} CPU ms per one-row request, "
          f"{path_ms / offline_ms:.3f}x the offline CPU per row ({offline_ms:.1f} ms)")


class _StubServer:
    """A server whose passes cost nothing: what is left is the HTTP path of `ept serve --http`."""

    kind, precision, prefix_cache = "encoder", "fp32", None

    def __init__(self, rows: list[dict]):
        self.tasks = {r["task"]: None for r in rows}

    def prepare(self, rows):
        return rows

    def predict(self, features, batch_size=None):
        return [{"task": f["task"], "prediction": 1, "label": "positive", "scores": [-0.25, 0.75]} for f in features]


def http_path_cpu(rows: list[dict], n: int = 2000) -> float:
    """CPU ms per one-row POST /v1/predict through the whole app (middleware, validation, the
    batcher and its worker thread, the answer's encoding) with a stub model, called in-process as
    ASGI: no network and no backbone, so the machine's load barely moves it. uvicorn's own socket
    and HTTP parsing work (in C, httptools/uvloop) is not in it."""
    import orjson

    from ept.serving.http_app import ServeConfig, create_app

    app = create_app(ServeConfig(max_wait_ms=0), _StubServer(rows))
    bodies = [orjson.dumps({"rows": [r]}) for r in rows]

    async def call(body: bytes):
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict",
                 "root_path": "", "scheme": "http", "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 1),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

        async def receive():
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def run() -> float:
        async with app.router.lifespan_context(app):
            for body in bodies[:100]:
                await call(body)
            start = time.process_time()
            for i in range(n):
                await call(bodies[i % len(bodies)])
            return 1000 * (time.process_time() - start) / n

    return asyncio.run(run())


def bench_load(count: int, root: Path, backbone, tok) -> dict:
    write_exports(root / f"load{count}", count, seed=1)
    before = rss_mib()
    start = time.perf_counter()
    server = served(backbone, tok, root / f"load{count}")
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    server.score([{"task": "t00000", "text": "warm"}])  # the bank's padded table is built on the first pass
    first = time.perf_counter() - start
    return {"prompts": count, "load_s": loaded, "first_pass_s": first, "rss_growth_mib": rss_mib() - before}


PREFIX_CONFIGS = {"EPT n=1": (1, 1, 1, 1), "PT n=10": (10, 10, 10, 10), "PT n=100": (100, 100, 100, 100),
                  "mixed n=1/10/100/10": (1, 10, 100, 10)}


def bench_prefix_cache(args) -> None:
    """Causal serving with and without the prompt KV cache (module docstring)."""
    from ept.backbones import load_backbone
    from ept.serving.server import LabelSpec, MultiTaskServer
    from ept.tasks import load_task

    backbone, tok = load_backbone("smollm2-135m")
    e = backbone.get_input_embeddings().embedding_dim
    scale = float(backbone.get_input_embeddings().weight.detach().std())  # prompts of the vocabulary's scale
    sst2 = load_task("sst2", DATA_DIR).validation
    rng = random.Random(0)
    examples = [sst2[rng.randrange(len(sst2))] for _ in range(args.prefix_batch * args.prefix_passes)]
    spec = LabelSpec("sst2", label_words=("negative", "positive"))
    rows_out, checks = [], []
    for label, lengths in PREFIX_CONFIGS.items():
        g = torch.Generator().manual_seed(len(rows_out))
        prompts = {f"t{k}": torch.randn(n, e, generator=g) * scale for k, n in enumerate(lengths)}
        servers, load_s = {}, {}
        for cached in (False, True):
            server = MultiTaskServer(backbone, tok, prefix_cache=cached)
            start = time.process_time()
            for name, prompt in prompts.items():
                server.add_task(name, prompt, spec)
            load_s[cached] = (time.process_time() - start) / len(prompts)
            servers[cached] = server
        rows = [{"task": f"t{rng.randrange(len(lengths))}", "text": ex.fields[0]} for ex in examples]
        feats = servers[True].prepare(rows)
        passes = [feats[i:i + args.prefix_batch] for i in range(0, len(feats), args.prefix_batch)]
        with torch.inference_mode():
            a, b = servers[False].predict_pass(passes[0]), servers[True].predict_pass(passes[0])
            checks.append(max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["scores"], rb["scores"])))
            same = [ra["prediction"] for ra in a] == [rb["prediction"] for rb in b]
            times = interleaved({"uncached": servers[False].predict_pass, "cached": servers[True].predict_pass},
                                passes, args.reps)
        kv_kib = sum(t.prefix_kv.numel() * t.prefix_kv.element_size() for t in servers[True].tasks.values()) / 1024 / len(prompts)
        plain, fast = (args.prefix_batch / median(times[k]) for k in ("uncached", "cached"))
        rows_out.append([label, plain, fast, paired_ratio(times["uncached"], times["cached"]), f"{checks[-1]:.1e}", same,
                         1000 * load_s[False], 1000 * load_s[True], kv_kib])
        print(f"{label}: uncached {plain:.2f} rows/s, cached {fast:.2f} rows/s", flush=True)
    print(f"\nSmolLM2-135M fp32, SST-2 validation rows, rank classification, passes of {args.prefix_batch} rows "
          f"(4 tasks mixed), {args.prefix_passes} passes x {args.reps} interleaved reps, median CPU time, 1 thread\n")
    table(["prompts", "uncached rows/s", "cached rows/s", "cached/uncached (paired)", "max |score diff|",
           "same predictions", "add_task ms uncached", "add_task ms cached", "cache KiB/task"], rows_out)


def main(argv=None) -> int:
    from ept.backbones import load_backbone

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="per load cell (default 8)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--tasks", type=int, nargs="+", default=[8, 1000])
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions of every cell (median reported)")
    p.add_argument("--rows", type=int, default=512, help="distinct rows drawn from SST-2/RTE validation")
    p.add_argument("--load-prompts", type=int, default=10000, help="prompts for the load-time / memory figure (0: skip)")
    p.add_argument("--prefix-cache", action="store_true", help="only the causal prompt KV cache comparison (SmolLM2)")
    p.add_argument("--prefix-batch", type=int, default=8, help="--prefix-cache: rows per pass (default 8)")
    p.add_argument("--prefix-passes", type=int, default=2, help="--prefix-cache: distinct passes per rep (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {machine()}", flush=True)
    if args.prefix_cache:
        bench_prefix_cache(args)
        return 0
    backbone, tok = load_backbone("minilm")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        cells, offline_rates = bench_http(args, Path(tmp), backbone, tok)
        load = bench_load(args.load_prompts, Path(tmp), backbone, tok) if args.load_prompts else None
    path_ms = http_path_cpu(real_rows(8, args.rows))
    report_http(args, cells, offline_rates, path_ms)
    if load:
        print(f"\n{load['prompts']} prompts: loaded in {load['load_s']:.1f} s "
              f"({1000 * load['load_s'] / load['prompts']:.2f} ms each), first pass {load['first_pass_s']:.2f} s, "
              f"RSS +{load['rss_growth_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
