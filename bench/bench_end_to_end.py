"""``graph-runtime run workflows/txt2img.json`` end to end against a plain diffusers script that makes the same
picture (StableDiffusionPipeline on the embedded model, DPM++ 2M, 20 steps, cfg 6, seed 42): each a fresh
process, runs interleaved, medians, and the two PNGs compared pixel for pixel.

    python bench/bench_end_to_end.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN_SCRIPT = """
import sys
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained({model!r}, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
image = pipe({prompt!r}, negative_prompt="", height=64, width=64, num_inference_steps=20, guidance_scale=6.0,
             generator=torch.Generator("cpu").manual_seed(42)).images[0]
image.save(sys.argv[1])
"""


def workflow() -> dict:
    return json.loads((REPO / "workflows" / "txt2img.json").read_text(encoding="utf-8"))


def commands(out: Path) -> dict[str, list[str]]:
    wf = workflow()
    prompt = wf["2"]["inputs"]["text"]
    script = PLAIN_SCRIPT.format(model=str(REPO / "models" / "tiny-shapes-sd"), prompt=prompt)
    return {
        "graph-runtime run workflows/txt2img.json": [sys.executable, "-m", "graph_runtime", "run",
                                                     str(REPO / "workflows" / "txt2img.json"),
                                                     "--output-dir", str(out / "ours")],
        "plain diffusers script": [sys.executable, "-c", script, str(out / "plain.png")],
    }


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def same_pixels(out: Path) -> bool:
    import numpy as np
    from PIL import Image

    ours = sorted((out / "ours").glob("*.png"))[-1]
    return bool(np.array_equal(np.asarray(Image.open(ours).convert("RGB")),
                               np.asarray(Image.open(out / "plain.png").convert("RGB"))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    # both with sleeping idle OpenMP threads (the CLI's own setting), so a busy neighbour does not stall only one
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = commands(out)
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.repeats):  # interleaved, so a busy neighbour slows both alike
            for key, cmd in rows.items():
                times[key].append(timed(cmd, env))
        equal = same_pixels(out)
    base = statistics.median(times["plain diffusers script"])
    print(f"{args.repeats} runs each, interleaved; medians; {os.cpu_count()} CPUs; "
          f"images pixel-equal: {'yes' if equal else 'NO'}\n")
    print("| command | median s | min s | x plain script |")
    print("|---|---|---|---|")
    for key, ts in times.items():
        med = statistics.median(ts)
        print(f"| {key} | {med:.2f} | {min(ts):.2f} | {med / base:.2f}x |")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
