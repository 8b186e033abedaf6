"""Reading a long history: the time of one page of /history and /jobs with ENTRIES finished prompts stored.

Fills the server's SQLite store with ENTRIES history rows shaped like real ones (the arithmetic workflow,
its editor metadata and outputs), starts the server on it on a loopback port, and times the reads the
editor makes: the queue/history sidebar (/jobs with a limit), one job, and /history without and with
max_items. Prints a table of the median of REPEAT calls and the reply sizes.

    python bench/bench_history_pages.py [--entries 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph_runtime import RuntimePaths  # noqa: E402
from web.app import BackgroundServer  # noqa: E402
from web.config import ServerConfig  # noqa: E402
from web.store import HistoryEntry, QueueItem, Store  # noqa: E402

ARITHMETIC = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())


def fill(store: Store, entries: int) -> str:
    now = time.time()
    last = ""
    for i in range(entries):
        pid = str(uuid.uuid4())
        extra = {"create_time": int((now - entries + i) * 1000), "client_id": "c",
                 "extra_pnginfo": {"workflow": {"id": f"wf-{i % 7}", "nodes": [{"id": n} for n in range(7)]}}}
        item = QueueItem(number=i, prompt_id=pid, prompt=ARITHMETIC, extra_data=extra, outputs=["6", "7"],
                         client_id="c", created=now - entries + i, seq=i)
        status = {"status_str": "success" if i % 10 else "error", "completed": bool(i % 10),
                  "messages": [["execution_start", {"prompt_id": pid}], ["execution_success", {"prompt_id": pid}]]}
        outputs = {"6": {"text": [f"6 x 7 = {i} tiles"]},
                   "7": {"files": [{"filename": f"t{i}.txt", "subfolder": "", "type": "output"}]}}
        store.add(item)
        store.finish(HistoryEntry(item=item, status=status, outputs=outputs, meta={}, started=now, finished=now + 1))
        last = pid
    return last


def timed(url: str, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-history-"))
    config = ServerConfig(host="127.0.0.1", port=0, paths=RuntimePaths(base=home), frontend=False,
                          max_history=args.entries)
    store = Store(config.db_path, max_history=args.entries)
    t = time.perf_counter()
    last = fill(store, args.entries)
    store.close()
    print(f"filled {args.entries} history rows in {time.perf_counter() - t:.1f} s")
    with BackgroundServer(config) as srv:
        rows = []
        for path in ("/api/jobs?limit=20&offset=0&sort_by=created_at&sort_order=desc",
                     "/api/jobs?status=failed&limit=20", f"/api/jobs/{last}", "/history?max_items=64",
                     "/history"):
            median, size = timed(srv.url + path, args.repeat)
            rows.append((path, f"{median * 1000:.1f} ms", f"{size / 1024:.0f} KiB"))
    width = max(len(r[0]) for r in rows)
    print(f"{'request':<{width}}  {'median':>10}  {'reply':>10}")
    for path, median, size in rows:
        print(f"{path:<{width}}  {median:>10}  {size:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
