"""Load on the server: many websocket clients, many small prompts, nothing lost, memory before and after.

Starts ``graph-runtime serve`` in a subprocess (its memory is measured alone), opens CLIENTS websocket
clients (a few of them never read, to show a stalled client does not hold up the queue), has every reading
client submit its share of PROMPTS small arithmetic prompts over HTTP, and waits until each client has seen
the end of each of its prompts. Prints a table.

    python bench/bench_server_load.py [--clients 50] [--prompts 500] [--stalled 5]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARITHMETIC = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base: str, body: dict) -> dict:
    req = urllib.request.Request(base + "/prompt", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def get(base: str, route: str):
    with urllib.request.urlopen(base + route, timeout=60) as resp:
        return json.loads(resp.read())


async def run_clients(base: str, n_clients: int, n_prompts: int, n_stalled: int) -> dict:
    from websockets.asyncio.client import connect

    ws_base = base.replace("http://", "ws://") + "/ws?clientId="
    readers = n_clients - n_stalled
    ids = [uuid.uuid4().hex for _ in range(n_clients)]
    sockets = [await connect(ws_base + cid, max_queue=None) for cid in ids]
    expected: dict[str, set[str]] = {cid: set() for cid in ids[:readers]}
    finished: dict[str, set[str]] = {cid: set() for cid in ids[:readers]}
    messages = 0
    all_sent = asyncio.Event()

    async def read(cid, ws):
        nonlocal messages
        async for raw in ws:
            messages += 1
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            d = msg["data"]
            if msg["type"] == "executing" and d.get("node") is None:
                finished[cid].add(d["prompt_id"])
                if all_sent.is_set() and finished[cid] >= expected[cid]:
                    return

    readers_tasks = [asyncio.create_task(read(cid, ws)) for cid, ws in zip(ids[:readers], sockets[:readers], strict=True)]
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        futures = []
        for i in range(n_prompts):
            cid = ids[i % readers]
            prompt = copy.deepcopy(ARITHMETIC)
            prompt["1"]["inputs"]["value"] = i  # every prompt differs: no run is a full cache hit
            futures.append((cid, loop.run_in_executor(pool, post, base, {"prompt": prompt, "client_id": cid})))
        for cid, fut in futures:
            expected[cid].add((await fut)["prompt_id"])
    submitted = time.perf_counter() - started
    all_sent.set()
    for cid in ids[:readers]:  # a reader that already saw everything before all_sent was set
        if finished[cid] >= expected[cid]:
            readers_tasks[ids.index(cid)].cancel()
    await asyncio.wait(readers_tasks, timeout=600)
    elapsed = time.perf_counter() - started
    lost = sum(len(expected[c] - finished[c]) for c in expected)
    for ws in sockets:
        await ws.close()
    return {"submitted_s": submitted, "elapsed_s": elapsed, "lost": lost, "messages": messages,
            "prompt_ids": set().union(*expected.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--stalled", type=int, default=5, help="clients that connect and never read")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-server-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "graph_runtime", "serve", "--port", str(port), "--no-frontend",
                             "--output-dir", str(home / "out"), "--user-dir", str(home / "user")],
                            cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                get(base, "/api/users")
                break
            except OSError:
                time.sleep(0.1)
        get(base, "/object_info")  # warm: the first describe of every node
        rss_before = rss_kib(proc.pid)
        result = asyncio.run(run_clients(base, args.clients, args.prompts, args.stalled))
        history: dict = {}
        while True:  # /history answers one page at a time
            page = get(base, f"/history?max_items=500&offset={len(history)}")
            history.update(page)
            if len(page) < 500:
                break
        missing = result["prompt_ids"] - set(history)
        failed = [p for p in result["prompt_ids"] & set(history)
                  if history[p]["status"]["status_str"] != "success"]
        rss_after = rss_kib(proc.pid)
        peak = rss_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()

    rows = [
        ("websocket clients (of them stalled)", f"{args.clients} ({args.stalled})"),
        ("prompts submitted", f"{args.prompts}"),
        ("submit time", f"{result['submitted_s']:.2f} s"),
        ("all done after", f"{result['elapsed_s']:.2f} s"),
        ("prompts per second", f"{args.prompts / result['elapsed_s']:.1f}"),
        ("websocket messages read", f"{result['messages']}"),
        ("prompts whose end a client missed", f"{result['lost']}"),
        ("prompts missing from history", f"{len(missing)}"),
        ("prompts not successful", f"{len(failed)}"),
        ("server RSS before", f"{rss_before / 1024:.1f} MiB"),
        ("server RSS after", f"{rss_after / 1024:.1f} MiB"),
        ("server peak RSS", f"{peak / 1024:.1f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 16}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    ok = result["lost"] == 0 and not missing and not failed
    print("OK: nothing lost" if ok else "FAILED: prompts were lost")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
