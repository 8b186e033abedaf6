"""Measure prompt adherence of the exported model on the held-out prompts.

    python -m models.shapes.evaluate --scheduler dpmpp_2m --steps 20 --cfg 6 --seeds 0 1

Runs diffusers' ``StableDiffusionPipeline`` on ``models/tiny-shapes-sd`` with the chosen scheduler
(built with ``from_config`` of the shipped scheduler config), then scores every picture with
:func:`models.shapes.metric.prompt_adherence`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)

from .common import DEFAULT_EXPORT, log, setup_threads
from .data import heldout_specs
from .metric import prompt_adherence, summarize

SCHEDULERS = {
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
}


def load_pipeline(folder: Path = DEFAULT_EXPORT, scheduler: str = "pndm") -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], steps: int, cfg: float, seed: int, batch: int = 64) -> np.ndarray:
    """float [B, 64, 64, 3] in 0..1."""
    out = []
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(prompts), batch):
        res = pipe(prompts[i : i + batch], num_inference_steps=steps, guidance_scale=cfg, generator=gen, output_type="np")
        out.append(res.images)
    return np.concatenate(out)


def save_grid(images: np.ndarray, path: Path, cols: int = 10) -> None:
    from PIL import Image

    n = len(images)
    rows = (n + cols - 1) // cols
    grid = np.ones((rows * 64, cols * 64, 3), dtype=np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = im
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=DEFAULT_EXPORT)
    ap.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpmpp_2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=6.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=Path, default=None, help="save the pictures of the first seed here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    setup_threads(args.threads)
    pipe = load_pipeline(args.folder, args.scheduler)
    prompts = [s.prompt for s in heldout_specs()]
    results = []
    for seed in args.seeds:
        images = generate(pipe, prompts, args.steps, args.cfg, seed)
        if args.grid is not None and seed == args.seeds[0]:
            save_grid(images, args.grid)
        results += prompt_adherence(images, prompts)
    summary = summarize(results)
    report = {
        "scheduler": args.scheduler, "steps": args.steps, "cfg": args.cfg, "seeds": args.seeds,
        "n_images": len(results), "summary": summary,
    }
    log(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
