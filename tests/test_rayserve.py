"""Ray Serve (ept.serving.ray_app): the HTTP app behind Ray's proxy with 2 replicas gives the batch mode's
predictions, both replicas answer, and a PUT / DELETE that lands on one replica reaches both, also
after the prompt log's replica died and Ray Serve started it again, empty."""

from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from test_http import LABELS, TEXTS, _batch_mode, _same, exports  # noqa: E402,F401  (shared fixture)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_give_the_batch_mode_predictions(exports, tmp_path, monkeypatch):
    import ray
    from ray import serve

    from ept.serving.ray_app import build

    rows = [{"task": "a", "text": t} for t in TEXTS] + [{"task": "b", "text": t} for t in TEXTS]
    expected = _batch_mode(exports, rows, tmp_path)
    port = _free_port()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build({"prompt": f"a={exports / 'a'},b={exports / 'b'}", "labels": f"a={LABELS['a'].replace(',', '/')};"
                     f"b={LABELS['b'].replace(',', '/')}", "replicas": "2", "num_cpus": "0.5", "max_wait_ms": "2",
                     "sync_seconds": "0.5", "allow_path": str(exports)})
        serve.run(app, name="ept", route_prefix="/", blocking=False)
        status = serve.status().applications["ept"]
        replicas = status.deployments["EptServe"].replica_states
        assert replicas.get("RUNNING") == 2, replicas
        url = f"http://127.0.0.1:{port}"
        got = [httpx.post(f"{url}/v1/predict", json={"rows": [r]}, timeout=60).json()["predictions"][0] for r in rows]
        _same(got, expected)
        whole = httpx.post(f"{url}/v1/predict", json={"rows": rows}, timeout=60)
        _same(whole.json()["predictions"], expected)
        pids = {httpx.get(f"{url}/healthz", timeout=30).json()["pid"] for _ in range(40)}
        assert len(pids) == 2, pids  # Ray's proxy spread the calls over both replicas
        _put_and_delete_reach_both_replicas(url, exports, tmp_path)
        assert status.deployments["EptPromptLog"].replica_states.get("RUNNING") == 1
        _a_restarted_log_is_followed(url, exports)
        serve.delete("ept")  # the log goes with the application (it was a detached actor that stayed)
        left = [a for a in ray.util.list_named_actors(all_namespaces=True) if "promptlog" in a["name"].lower()
                or "prompt-log" in a["name"].lower()]
        assert left == [], left
    finally:
        serve.shutdown()
        ray.shutdown()


def _replicas_at(url: str, version: int, seconds: float = 60) -> dict:
    """Wait until both replicas (by pid, through the proxy) report the log version; their /healthz."""
    seen, deadline = {}, time.monotonic() + seconds
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        seen[health["pid"]] = health
        if len(seen) == 2 and all(h["prompts_version"] == version for h in seen.values()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the replicas did not reach prompt log version {version}: {seen}")


def _put_and_delete_reach_both_replicas(url, exports, tmp_path):
    rows = [{"task": "c", "text": t} for t in TEXTS]
    expected = _batch_mode(exports, rows, tmp_path, names=("c",))
    put = httpx.put(f"{url}/v1/prompts/c", json={"path": str(exports / "c"), "labels": LABELS["c"].split(",")}, timeout=60)
    assert put.status_code == 200, put.text
    assert all(h["prompts"] == 3 for h in _replicas_at(url, 1).values())
    for _ in range(3):  # 18 one-row calls over 2 replicas: every answer is the new prompt's
        _same([httpx.post(f"{url}/v1/predict", json={"rows": [r]}, timeout=60).json()["predictions"][0] for r in rows],
              expected)
    assert httpx.delete(f"{url}/v1/prompts/c", timeout=60).status_code == 200
    assert all(h["prompts"] == 2 for h in _replicas_at(url, 2).values())
    gone = [httpx.post(f"{url}/v1/predict", json={"rows": [r]}, timeout=60).status_code for r in rows * 3]
    assert gone == [404] * len(gone)


def _log_actors() -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "EptPromptLog" in a["name"]]


def _a_restarted_log_is_followed(url, exports):
    """The log's replica killed: Serve starts a new one, empty, counting from version 1 again. The
    replicas (at version 2 of the old log) must follow it, not wait for its version 3."""
    import ray

    (old,) = _log_actors()
    ray.kill(ray.get_actor(old, namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 60
    while len(new := [n for n in _log_actors() if n != old]) != 1:
        assert time.monotonic() < deadline, f"Serve did not restart the prompt log: {_log_actors()}"
        time.sleep(0.2)
    put = None
    while put is None or put.status_code != 200:  # until the handle routes to the new log replica
        assert time.monotonic() < deadline, put.text
        put = httpx.put(f"{url}/v1/prompts/c", json={"path": str(exports / "c"), "labels": LABELS["c"].split(",")},
                        timeout=60)
    assert all(h["prompts"] == 3 for h in _replicas_at(url, 1).values())
