"""Start-up time of the commands that need no model: ``validate`` and ``nodes --json``, side by side with
``python -c "import torch"`` on the same machine (runs interleaved, medians), and whether each command
imported torch or diffusers.

    python bench/bench_startup.py [--repeats 5] [--tree OTHER_CHECKOUT ...]

``--tree`` adds the same commands run from another checkout (e.g. the main branch) for a before/after table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(tree: Path) -> dict[str, list[str]]:
    return {
        "validate workflows/txt2img.json": [sys.executable, "-m", "graph_runtime", "validate",
                                            str(tree / "workflows" / "txt2img.json")],
        "nodes --json": [sys.executable, "-m", "graph_runtime", "nodes", "--json"],
    }


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}


def heavy_imports(cmd: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True, cwd=cwd)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    return sorted(names & {"torch", "diffusers", "transformers"})


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tree", action="append", default=[], help="another checkout to compare (before)")
    args = ap.parse_args(argv)
    trees = [(Path(t).resolve().name, Path(t).resolve()) for t in args.tree] + [("this tree", REPO)]
    # each command runs in its tree: ``python -m`` puts the working directory first on sys.path
    rows: dict[str, tuple[list[str], dict[str, str], Path]] = {'python -c "import torch"': (
        [sys.executable, "-c", "import torch"], {**os.environ}, REPO)}
    for label, tree in trees:
        for name, cmd in commands(tree).items():
            rows[f"{name} ({label})"] = (cmd, env_for(tree), tree)
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.repeats):  # interleaved, so a busy neighbour slows every row alike
        for key, (cmd, env, cwd) in rows.items():
            times[key].append(timed(cmd, env, cwd))
    torch_s = statistics.median(times['python -c "import torch"'])
    print(f"{args.repeats} runs each, interleaved; medians; {os.cpu_count()} CPUs\n")
    print("| command | median s | min s | x import torch | imports |")
    print("|---|---|---|---|---|")
    for key, (cmd, env, cwd) in rows.items():
        med = statistics.median(times[key])
        heavy = ", ".join(heavy_imports(cmd, env, cwd)) if "import torch" not in key else "torch"
        print(f"| {key} | {med:.2f} | {min(times[key]):.2f} | {med / torch_s:.2f}x | {heavy or 'none of torch, diffusers, transformers'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
