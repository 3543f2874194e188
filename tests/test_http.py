"""`ept serve --http` (ept.serving.http_app): a real server in a subprocess on a loopback port, two tiny
exports on a 2-layer BERT. Concurrent callers of different tasks get the batch mode's numbers;
prompts are added and deleted live; every bad request gets its status code and the server still
answers correctly after it; SIGTERM finishes a request in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = "s3cret-token"
TEXTS = ["a gripping , funny and moving film .", "dull", "an utterly charming surprise", "not worth the ticket",
         "the plot goes nowhere and the actors seem to know it .", "it 's a mess , but an ambitious one ."]
PAIRS = [["A man is sleeping.", "The man is awake."], ["Paris is in France.", "France has a capital."]]
LABELS = {"a": "negative,positive", "b": "yes,no,maybe", "c": "bad,good"}


@pytest.fixture(scope="module")
def exports(tiny_bert, tmp_path_factory):
    """Three exports on the tiny BERT: a (EPT), b (PT, n=10), c (added later over HTTP)."""
    from transformers import AutoModel, AutoTokenizer

    from ept.backbones import PromptedModel
    from ept.checkpoint import export_prompt
    from ept.prompts import method_config

    root = tmp_path_factory.mktemp("exports")
    model, tok = AutoModel.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(tiny_bert)
    for seed, (name, method) in enumerate((("a", "ept"), ("b", "pt"), ("c", "ept"))):
        torch.manual_seed(seed)
        export_prompt(PromptedModel(model, tok, method_config(method)), root / name, tiny_bert)
    (root / "token").write_text(TOKEN + "\n")
    return root


def _start(exports, *flags, names=("a", "b")):
    cmd = [sys.executable, "-m", "ept.cli", "serve", "--http", "--port", "0", "--token-file", str(exports / "token")]
    for name in names:
        cmd += ["--prompt", f"{name}={exports / name}", "--labels", f"{name}={LABELS[name]}"]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd + list(flags), stderr=subprocess.PIPE, text=True, env=env)
    lines = proc.log = []  # the server's log, read on (tests look for request ids in it)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        match = re.search(r"Uvicorn running on http://[\d.]+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # keep the pipe drained
            return proc, f"http://127.0.0.1:{match.group(1)}"
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def _stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(exports):
    proc, url = _start(exports, "--max-batch", "8", "--max-wait-ms", "20", "--max-queue", "40", "--max-body-bytes", "4000",
                       "--allow-path", str(exports))  # PUT {"path"} loads exports/c
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    client.log = proc.log
    yield client
    client.close()
    assert _stop(proc) == 0


def _rows():
    rows = []
    for i, text in enumerate(TEXTS):
        rows.append({"task": "a", "text": text})
        rows.append({"task": "b", "fields": PAIRS[i % 2]} if i % 2 else {"task": "b", "text": text})
    return rows


def _batch_mode(exports, rows, tmp_path, names=("a", "b")):
    """The reference: `ept serve --input` on the same exports."""
    from ept.cli import main

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["serve", "--input", str(tmp_path / "rows.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    for name in names:
        args += ["--prompt", f"{name}={exports / name}", "--labels", f"{name}={LABELS[name]}"]
    assert main(args) == 0
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def _same(got, expected):
    assert [(r["task"], r["prediction"], r["label"]) for r in got] == [(r["task"], r["prediction"], r["label"]) for r in expected]
    for g, e in zip(got, expected):  # other rows in the pass change padding, hence float summation order only
        assert g["scores"] == pytest.approx(e["scores"], abs=1e-4)


def test_concurrent_clients_get_the_batch_mode_numbers(server, exports, tmp_path):
    rows = _rows()
    expected = _batch_mode(exports, rows, tmp_path)
    # 12 callers at once, one row each, tasks interleaved: the worker mixes them into shared passes
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda r: server.post("/v1/predict", json={"rows": [r]}), rows))
    assert [a.status_code for a in answers] == [200] * len(rows)
    _same([a.json()["predictions"][0] for a in answers], expected)
    whole = server.post("/v1/predict", json={"rows": rows})  # one request of 12 rows > --max-batch 8
    _same(whole.json()["predictions"], expected)
    metrics = server.get("/metrics").text
    assert 'ept_rows_total{task="a"}' in metrics and "ept_batch_rows_bucket" in metrics and "ept_queue_rows" in metrics
    batches = float(re.search(r"^ept_batch_rows_count (\S+)", metrics, re.M).group(1))
    assert batches < 2 * len(rows)  # callers shared passes (12 single-row calls + 1 call of 12 rows)


def test_request_ids_and_what_the_prompts_say(server):
    """Every answer carries an X-Request-ID (the caller's own when given) and the access log names
    it; /v1/prompts shows each prompt's method, backbone, precision (served and validated) and
    prompt-cache state; the start-up log says the precision."""
    assert any("computing in fp32 (the exports record no precision)" in line for line in server.log)
    mine = server.post("/v1/predict", json={"rows": [{"task": "a", "text": "ok"}]}, headers={"X-Request-ID": "req-42.a"})
    fresh = server.post("/v1/predict", json={"rows": [{"task": "zz", "text": "x"}]})
    assert mine.headers["x-request-id"] == "req-42.a" and fresh.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{6}-\d+", fresh.headers["x-request-id"])
    odd = server.get("/healthz", headers={"X-Request-ID": "no spaces or\tcontrol"})
    assert odd.headers["x-request-id"] != "no spaces or\tcontrol"  # a caller's id that is not a plain token is replaced
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            any(rid in line and code in line for line in server.log)
            for rid, code in (("req-42.a", '"POST /v1/predict" 200'), (fresh.headers["x-request-id"], "404"))):
        time.sleep(0.1)
    assert any("req-42.a" in line and '"POST /v1/predict" 200' in line for line in server.log), server.log[-5:]
    assert any(fresh.headers["x-request-id"] in line and " 404 " in line for line in server.log)
    prompts = {p["name"]: p for p in server.get("/v1/prompts").json()["prompts"]}
    assert {k: prompts["a"][k] for k in ("method", "precision", "validated_precision", "cache")} == \
        {"method": "ept", "precision": "fp32", "validated_precision": None, "cache": None}  # an encoder: no prompt cache
    assert prompts["b"]["method"] == "pt" and prompts["b"]["backbone"]


def test_hot_add_replace_delete(server, exports, tmp_path):
    row = {"task": "c", "text": TEXTS[0]}
    assert server.post("/v1/predict", json={"rows": [row]}).status_code == 404
    put = server.put("/v1/prompts/c", json={"path": str(exports / "c"), "labels": LABELS["c"].split(",")})
    assert put.status_code == 200, put.text
    assert put.json()["loaded"]["label_words"] == ["bad", "good"]
    assert {p["name"] for p in server.get("/v1/prompts").json()["prompts"]} == {"a", "b", "c"}
    expected = _batch_mode(exports, [row, {"task": "a", "text": TEXTS[1]}], tmp_path, names=("a", "c"))
    _same(server.post("/v1/predict", json={"rows": [row, {"task": "a", "text": TEXTS[1]}]}).json()["predictions"], expected)

    # replace c with an uploaded prompt.safetensors (a's vector): c now scores exactly as a does
    body = (exports / "a" / "prompt.safetensors").read_bytes()
    n = json.loads((exports / "a" / "prompt.json").read_text())["num_tokens"]
    put = server.put(f"/v1/prompts/c?labels=negative,positive&num_tokens={n}", content=body,
                     headers={"content-type": "application/octet-stream"})
    assert put.status_code == 200, put.text
    both = server.post("/v1/predict", json={"rows": [{"task": "a", "text": TEXTS[2]}, {"task": "c", "text": TEXTS[2]}]})
    pa, pc = both.json()["predictions"]
    assert pa["scores"] == pytest.approx(pc["scores"], abs=1e-5) and pc["label"] == pa["label"]

    # an export validated in another precision than the server's: served, with a warning in the answer and the log
    import shutil

    shutil.copytree(exports / "c", exports / "c16", dirs_exist_ok=True)  # under --allow-path
    meta = json.loads((exports / "c16" / "prompt.json").read_text())
    (exports / "c16" / "prompt.json").write_text(json.dumps({**meta, "precision": "bf16"}))
    put = server.put("/v1/prompts/c", json={"path": str(exports / "c16"), "labels": ["bad", "good"]})
    assert put.status_code == 200 and "validated in bf16; this server computes in fp32" in put.json()["loaded"]["warning"]
    assert put.json()["loaded"]["validated_precision"] == "bf16" and put.json()["loaded"]["precision"] == "fp32"

    assert server.delete("/v1/prompts/c").status_code == 200
    gone = server.post("/v1/predict", json={"rows": [row]})
    assert gone.status_code == 404 and "'c' is not loaded; loaded: a, b" in gone.json()["detail"]
    assert server.delete("/v1/prompts/c").status_code == 404


def test_bad_requests_get_their_codes_and_the_server_carries_on(server, exports, tmp_path):
    good = {"rows": [{"task": "a", "text": TEXTS[0]}, {"task": "b", "fields": PAIRS[0]}]}
    expected = _batch_mode(exports, good["rows"], tmp_path)
    cases = [
        (dict(content=b'{"rows": [', headers={"content-type": "application/json"}), 400, "malformed JSON"),
        (dict(json={"rows": [{"task": "a", "text": None}]}), 422, "rows[0]"),
        (dict(json={"rows": [{"task": "a", "text": ["x"]}]}), 422, "rows[0].text"),
        (dict(json={"rows": [{"task": "a", "text": {"a": 1}}]}), 422, "rows[0].text"),
        (dict(json={"rows": [{"task": "a", "fields": [1, 2]}]}), 422, "rows[0].fields[0]"),
        (dict(json={"rows": [{"task": "a", "text": "x", "extra": 1}]}), 422, "rows[0].extra"),
        (dict(json={"rows": []}), 422, "rows"),
        (dict(json={"rows": [{"task": "a", "text": "ok"}, {"task": "zz", "text": "x"}]}), 404, "rows[1].task: 'zz' is not loaded; loaded: a, b"),
        (dict(json={"rows": [{"task": "a", "text": "x" * 5000}]}), 413, "--max-body-bytes"),
        (dict(json={"rows": [{"task": "a", "text": "x"}] * 41}), 413, "--max-queue is 40"),
        (dict(json=good, headers={"Authorization": "Bearer wrong"}), 401, "bearer token"),
        (dict(json=good, headers={"Authorization": ""}), 401, "bearer token"),
    ]
    for kwargs, code, words in cases:
        answer = server.post("/v1/predict", **kwargs)
        assert answer.status_code == code, (kwargs, answer.text)
        assert words in answer.text, (words, answer.text)
        again = server.post("/v1/predict", json=good)
        assert again.status_code == 200
        _same(again.json()["predictions"], expected)
    assert server.get("/healthz", headers={"Authorization": ""}).json()["status"] == "ok"  # open without a token
    assert server.put("/v1/prompts/x", json={"path": str(exports / "none")}).status_code == 404  # not an export
    assert server.put("/v1/prompts/x", json={"path": str(tmp_path)}).status_code == 403  # outside --allow-path
    assert server.put("/v1/prompts/x", json={"path": str(exports / "a"), "labels": ["a", ""]}).status_code == 422


def test_429_when_the_queue_is_full_and_sigterm_drains(exports, tmp_path):
    # a 2 s fill window and a 10-row queue: the first 8-row request waits, the next one overflows
    proc, url = _start(exports, "--max-batch", "64", "--max-wait-ms", "2000", "--max-queue", "10")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rows = [{"task": "a", "text": t} for t in TEXTS] + [{"task": "b", "fields": p} for p in PAIRS]
    expected = _batch_mode(exports, rows, tmp_path)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/predict", json={"rows": rows}, headers=headers, timeout=60)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/healthz").json()["queued_rows"] < len(rows) and time.monotonic() < deadline:
                time.sleep(0.05)
            full = httpx.post(f"{url}/v1/predict", json={"rows": rows[:3]}, headers=headers)
            assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1, full.text
            proc.send_signal(signal.SIGTERM)  # the first request is still waiting in the queue
            answer = first.result(timeout=60)
        assert answer.status_code == 200, answer.text
        _same(answer.json()["predictions"], expected)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_under_load_answers_every_queued_request(exports, tmp_path):
    """8 callers back to back; SIGTERM when all 8 have a request waiting in the queue (a 300 ms
    fill window holds them there): those 8 get the batch mode's answers, nothing gets a 5xx but
    503 "shutting down", later calls are refused, and the server exits 0."""
    proc, url = _start(exports, "--max-batch", "64", "--max-wait-ms", "300")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rows = _rows()
    expected = {json.dumps(r): e for r, e in zip(rows, _batch_mode(exports, rows, tmp_path))}
    outcomes: dict[tuple[int, int], object] = {}  # (caller, call) -> status code or exception name
    current = [0] * 8
    stop = threading.Event()

    def caller(k: int):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            while not stop.is_set():
                row = rows[(k + current[k]) % len(rows)]
                try:
                    answer = client.post("/v1/predict", json={"rows": [row]})
                except httpx.TransportError as err:  # refused, or closed while idle: never a half answer
                    outcomes[k, current[k]] = type(err).__name__
                    return
                outcomes[k, current[k]] = answer.status_code
                if answer.status_code != 200:
                    return
                _same(answer.json()["predictions"], [expected[json.dumps(row)]])
                current[k] += 1

    try:
        with ThreadPoolExecutor(8) as pool:
            done = [pool.submit(caller, k) for k in range(8)]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # a few rounds answered, then all 8 callers waiting in the queue
                before = list(current)
                if min(before) >= 2 and httpx.get(f"{url}/healthz").json()["queued_rows"] == 8 and current == before:
                    break
                time.sleep(0.01)
            in_flight = [(k, current[k]) for k in range(8)]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            stop.set()
            for f in done:
                f.result(timeout=60)
        assert all(outcomes[call] == 200 for call in in_flight), {c: outcomes.get(c) for c in in_flight}
        assert set(outcomes.values()) <= {200, 503, "ConnectError", "RemoteProtocolError", "ReadError"}, outcomes
        assert sum(v == 200 for v in outcomes.values()) >= 3 * 8
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()


def test_causal_prefix_cache_follows_put_and_delete(minilm_tokenizer):
    """A decoder-only backbone in-process (fastapi's TestClient): the prompt keys/values cached at
    load give the uncached server's scores; PUT replaces a prompt and its cache (an uploaded row
    broadcast to 10 tokens: the next pass scores as a fresh server would), DELETE drops the task
    with its cache."""
    import copy
    import io

    from fastapi.testclient import TestClient
    from safetensors.torch import save
    from transformers import LlamaConfig, LlamaForCausalLM

    from ept.serving.http_app import ServeConfig, create_app
    from ept.serving.server import LabelSpec, MultiTaskServer

    tok = copy.deepcopy(minilm_tokenizer)
    tok.eos_token, tok.padding_side = "[SEP]", "left"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    model.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    prompts = {"a": torch.randn(1, 32, generator=g), "b": torch.randn(10, 32, generator=g)}
    new_b = torch.randn(1, 32, generator=g)

    def served(prompts, **options):
        server = MultiTaskServer(model, tok, **options)
        for name, p in prompts.items():
            server.add_task(name, p, LabelSpec(name, label_words=tuple(LABELS["a"].split(","))))
        return server

    rows = [{"task": t, "text": x} for x in TEXTS for t in ("a", "b")]

    def reference(prompts, rows):
        return [r["scores"] for r in served(prompts, prefix_cache=False).score(rows, batch_size=len(rows))]

    def check(got, want):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)

    server = served(prompts)
    with TestClient(create_app(ServeConfig(max_batch=16, max_wait_ms=20), server)) as client:
        first = client.post("/v1/predict", json={"rows": rows})
        assert first.status_code == 200, first.text
        check([p["scores"] for p in first.json()["predictions"]], reference(prompts, rows))

        buf = io.BytesIO(save({"prompt": new_b}))
        put = client.put("/v1/prompts/b?labels=negative,positive&num_tokens=10", content=buf.getvalue(),
                         headers={"content-type": "application/octet-stream"})
        assert put.status_code == 200, put.text
        assert server.tasks["b"].prefix_kv.shape[3] == 10  # the new prompt's cache (no BOS with this tokenizer)
        assert put.json()["loaded"]["cache"] == "cached" and put.json()["loaded"]["method"] == "upload"
        second = client.post("/v1/predict", json={"rows": rows})
        metrics = client.get("/metrics").text
        kv_bytes = sum(t.prefix_kv.numel() * t.prefix_kv.element_size() for t in server.tasks.values())
        assert f"ept_prefix_cache_bytes {float(kv_bytes)}" in metrics and "ept_prefix_cache_entries 2.0" in metrics
        assert 'ept_prefix_cache_lookups_total{result="hit"} 4.0' in metrics  # two passes x two tasks, none evicted
        assert "ept_prefix_cache_hit_ratio 1.0" in metrics and "ept_prefix_cache_cap_bytes" in metrics
        check([p["scores"] for p in second.json()["predictions"]], reference({"a": prompts["a"], "b": new_b.expand(10, -1)}, rows))
        assert [p["scores"] for p in second.json()["predictions"]][1] != [p["scores"] for p in first.json()["predictions"]][1]

        assert client.delete("/v1/prompts/a").status_code == 200
        assert "a" not in server.tasks
        assert client.post("/v1/predict", json={"rows": rows[:1]}).status_code == 404
        only_b = [r for r in rows if r["task"] == "b"]
        third = client.post("/v1/predict", json={"rows": only_b})
        check([p["scores"] for p in third.json()["predictions"]], reference({"b": new_b.expand(10, -1)}, only_b))


def test_replicas_sharing_a_prompt_log_agree_after_put_and_delete(exports):
    """Two replicas in one process (ept.serving.ray_app runs the same code with a Ray actor as the log):
    a PUT on one is served by the other within the sync interval with the same scores, a DELETE
    on the other reaches the first; a replica started later replays the log before it serves; a log
    that restarts empty is followed from its first change."""
    from fastapi.testclient import TestClient

    from ept.serving.http_app import PromptLog, ServeConfig, create_app
    from ept.serving.server import build_server, find_exports, load_prompts

    shared = PromptLog()
    config = ServeConfig(max_wait_ms=1, prompt_log=shared, sync_seconds=0.05, allowed_paths=(str(exports),))
    labels = {n: tuple(LABELS[n].split(",")) for n in ("a", "b")}

    def replica():
        server = build_server(load_prompts(find_exports({n: str(exports / n) for n in ("a", "b")}), labels), say=lambda _: None)
        return TestClient(create_app(config, server))

    def until(check, seconds=10):
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, "the replicas did not agree in time"
            time.sleep(0.05)

    row = {"task": "c", "text": TEXTS[0]}
    with replica() as one, replica() as two:
        assert one.put("/v1/prompts/c", json={"path": str(exports / "c"), "labels": ["bad", "good"]}).status_code == 200
        until(lambda: two.post("/v1/predict", json={"rows": [row]}).status_code == 200)
        a, b = (c.post("/v1/predict", json={"rows": [row]}).json()["predictions"][0] for c in (one, two))
        assert a == b and a["label"] in ("bad", "good")
        assert one.get("/healthz").json()["prompts_version"] == two.get("/healthz").json()["prompts_version"] == 1

        body = (exports / "a" / "prompt.safetensors").read_bytes()  # c becomes a's vector, uploaded to the other one
        n = json.loads((exports / "a" / "prompt.json").read_text())["num_tokens"]
        up = two.put(f"/v1/prompts/c?labels=negative,positive&num_tokens={n}", content=body,
                     headers={"content-type": "application/octet-stream"})
        assert up.status_code == 200, up.text
        until(lambda: one.post("/v1/predict", json={"rows": [row]}).json()["predictions"][0]["label"] in ("negative", "positive"))
        same_as_a = one.post("/v1/predict", json={"rows": [row, {"task": "a", "text": TEXTS[0]}]}).json()["predictions"]
        assert same_as_a[0]["scores"] == pytest.approx(same_as_a[1]["scores"], abs=1e-5)

        with replica() as late:  # started after both changes: replays them before serving
            assert late.get("/healthz").json()["prompts_version"] == 2
            assert late.post("/v1/predict", json={"rows": [row]}).json()["predictions"][0]["scores"] == \
                pytest.approx(same_as_a[0]["scores"], abs=1e-5)

        assert two.delete("/v1/prompts/c").status_code == 200
        until(lambda: one.post("/v1/predict", json={"rows": [row]}).status_code == 404)
        assert {p["name"] for p in one.get("/v1/prompts").json()["prompts"]} == {"a", "b"}
        bad = one.put("/v1/prompts/d", json={"path": str(exports / "missing")})
        assert bad.status_code == 404 and shared.version == 3  # a refused change is never recorded

        # The log restarted (its Ray replica died): empty, counting from 1 again, in a new epoch. The
        # replicas, past version 3 of the old one, still follow it: a PUT on one reaches the other.
        shared.__init__()
        until(lambda: two.get("/healthz").json()["prompts_version"] == 0)
        assert one.put("/v1/prompts/c", json={"path": str(exports / "c"), "labels": ["bad", "good"]}).status_code == 200
        until(lambda: two.post("/v1/predict", json={"rows": [row]}).status_code == 200)
        assert one.get("/healthz").json()["prompts_version"] == two.get("/healthz").json()["prompts_version"] == 1


def test_http_status_comes_from_the_error_type_not_its_text(minilm):
    """Issue 21: 404 means "that task is not served" by the error's type (`TaskNotServed`), raised
    by the task registry whether the row names an unknown task or its task was removed before the
    pass; a row error that merely quotes the words "is not served" stays a 422, a stray KeyError a 500."""
    from ept.serving.http_app import _status_of
    from ept.serving.server import MultiTaskServer, RowError, TaskNotServed

    model, tok = minilm
    server = MultiTaskServer(model, tok)
    server.add_task("a", torch.zeros(1, model.config.hidden_size), label_words=("no", "yes"))
    features = server.prepare([{"task": "a", "text": "fine"}])
    server.remove_task("a")
    with pytest.raises(TaskNotServed) as gone:  # deleted between the request's check and its pass
        server.predict(features)
    with pytest.raises(TaskNotServed) as unknown:
        server.prepare([{"task": "zz", "text": "x"}])
    assert unknown.value.row == 0 and str(unknown.value).startswith("row 0: task 'zz' is not served")
    assert [_status_of(e) for e in (gone.value, unknown.value)] == [404, 404]
    assert _status_of(RowError(3, "the text 'this task is not served' is fine")) == 422
    assert _status_of(KeyError("is not served")) == 500


def test_a_prompt_log_file_keeps_put_and_delete_across_a_restart(exports, tmp_path, caplog):
    """`ept serve --http --prompt-log FILE` (Ray: prompt_log=FILE): an upload, a path PUT and a
    DELETE made before a restart are served the same after it, from the file alone; a last line cut
    short by a crash is dropped with a warning, a damaged line before it is an error naming it."""
    from fastapi.testclient import TestClient

    from ept.serving.http_app import PromptLog, ServeConfig, create_app
    from ept.serving.server import build_server, find_exports, load_prompts

    path = tmp_path / "prompts.log"
    labels = {n: tuple(LABELS[n].split(",")) for n in ("a", "b")}

    def server(log):
        config = ServeConfig(max_wait_ms=1, prompt_log=log, sync_seconds=0.05, allowed_paths=(str(exports),))
        backend = build_server(load_prompts(find_exports({n: str(exports / n) for n in ("a", "b")}), labels), say=lambda _: None)
        return TestClient(create_app(config, backend))

    rows = [{"task": t, "text": TEXTS[0]} for t in ("b", "c", "up")]
    body = (exports / "a" / "prompt.safetensors").read_bytes()
    n = json.loads((exports / "a" / "prompt.json").read_text())["num_tokens"]
    first = PromptLog(str(path))
    with server(first) as one:
        assert one.put("/v1/prompts/c", json={"path": str(exports / "c"), "labels": ["bad", "good"]}).status_code == 200
        up = one.put(f"/v1/prompts/up?labels=negative,positive&num_tokens={n}", content=body,
                     headers={"content-type": "application/octet-stream"})
        assert up.status_code == 200, up.text
        assert one.delete("/v1/prompts/a").status_code == 200
        before = one.post("/v1/predict", json={"rows": rows}).json()["predictions"]
    with server(PromptLog(str(path))) as again:  # a new process: only the file carries the changes
        assert {p["name"] for p in again.get("/v1/prompts").json()["prompts"]} == {"b", "c", "up"}
        assert again.post("/v1/predict", json={"rows": rows}).json()["predictions"] == before
        assert again.get("/healthz").json()["prompts_version"] == 3
    assert PromptLog(str(path)).epoch == first.epoch  # the same log, not a new one to replay from 0

    with path.open("a") as f:
        f.write('{"version": 4, "name": "x", "chan')  # a crash mid-write
    with caplog.at_level("WARNING"):
        kept = PromptLog(str(path))
    assert kept.version == 3 and "last line cut short" in caplog.text
    assert path.read_text().count("\n") == 4 and '"name": "x"' not in path.read_text()  # compacted, the bad tail gone
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"prompts.log:2: not a prompt log line"):
        PromptLog(str(path))


def test_a_prompt_log_file_is_compacted_while_it_runs(tmp_path):
    """A server that keeps replacing its prompts keeps a log file of a bounded size, and a log
    started on the compacted file replays to the same latest changes and versions."""
    import asyncio

    from ept.serving.http_app import PromptLog

    path = tmp_path / "prompts.log"
    log = PromptLog(str(path))
    log.compact_after = 4

    async def changes():
        for i in range(30):  # 3 names, each replaced 10 times; one deleted at the end
            await log.record(f"t{i % 3}", {"content_type": "application/json", "body": f'{{"i": {i}}}'.encode(), "query": ""})
        await log.record("t0", None)

    asyncio.run(changes())
    lines = path.read_text().splitlines()
    assert len(lines) - 1 <= 3 + 4  # the epoch line, the live changes and at most compact_after superseded
    again = PromptLog(str(path))
    assert (again.epoch, again.version) == (log.epoch, 31)
    assert again.latest == log.latest and again.latest["t0"] == (31, None)
    assert again.latest["t2"][1]["body"] == b'{"i": 29}'
