"""Engine bookkeeping cost on chains of trivial nodes: is the cost per node flat as the graph grows?

    python bench/bench_engine.py [--sizes 100,1000,10000,100000] [--repeat 3]

For each N: validate + first run, cached re-run of the same workflow, and a re-run after changing the first
node's literal (which invalidates the whole chain). Prints seconds and microseconds per node (best of --repeat).
"""

from __future__ import annotations

import argparse
import copy
import time

from graph_runtime import Executor, default_registry


def chain(n: int) -> dict:
    doc = {"1": {"class_type": "IntMath", "inputs": {"a": 0, "b": 1, "op": "add"}}}
    for i in range(2, n + 1):
        doc[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "op": "add"}}
    doc["out"] = {"class_type": "ShowValue", "inputs": {"value": [str(n), 0]}}
    return doc


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(n: int, repeat: int) -> dict:
    registry = default_registry(with_entry_points=False)
    doc = chain(n)
    changed = copy.deepcopy(doc)
    changed["1"]["inputs"]["a"] = 1

    def first():
        ex = Executor(registry)
        result = ex.run(doc)
        assert result.outputs["out"]["text"] == [str(n)]

    ex = Executor(registry)
    ex.run(doc)

    def cached():
        assert not ex.run(doc).executed

    state = {"flip": False}

    def after_change():
        state["flip"] = not state["flip"]
        result = ex.run(changed if state["flip"] else doc)
        assert len(result.executed) == n + 1

    return {"n": n, "first": best(first, repeat), "cached": best(cached, repeat),
            "changed": best(after_change, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| nodes | validate + first run | cached re-run | re-run after first literal changed | µs/node first | µs/node cached |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        r = measure(n, args.repeat if n < 100_000 else 1)
        print(f"| {n:,} | {r['first']:.3f} s | {r['cached']:.3f} s | {r['changed']:.3f} s | "
              f"{r['first'] / n * 1e6:.1f} | {r['cached'] / n * 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
