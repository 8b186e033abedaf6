"""Scheduler quality on the embedded model: prompt adherence, distance to a converged reference, speed.

    python bench/bench_scheduler_quality.py                                   # every scheduler x 5,10,20,50
    python bench/bench_scheduler_quality.py --schedulers euler,dpmpp_2m --steps 5,10 --prompts 4   # quick

For each scheduler and step count, a fixed batch of held-out prompts (the model's held-out attribute
combinations, first N) is rendered with one seed through the Sampler's code path (Scheduler -> Sampler ->
VAEDecode functions, CFG with an empty negative). Reported per cell:

* adherence: share of pictures whose five attributes (colour, shape, position, size, background) the model's
  classifier reads back as prompted (``models.shapes.metric``), and the mean share of attributes;
* distance: mean absolute pixel difference (0..1 scale) to a reference made with the same seed by a
  deterministic solver at many steps (default DDIM, 250 steps: DDIM and Euler agree there to 0.002, while
  diffusers' DPM++ 2M drifts away from both beyond ~50 steps on this model);
* seconds per image (sampling + decoding, batch of N on the threads given).

Writes ``scheduler_quality.md`` and ``scheduler_quality.png`` (matplotlib) into --out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

FALLBACK_PROMPTS = [
    f"a {size} {color} {shape} in the {pos} on a {bg} background"
    for size, color, shape, pos, bg in [
        ("large", "red", "circle", "center", "blue"), ("small", "green", "square", "top left", "white"),
        ("large", "yellow", "triangle", "bottom right", "black"), ("small", "blue", "circle", "top right", "yellow"),
        ("large", "white", "square", "bottom left", "red"), ("small", "black", "triangle", "center", "green"),
        ("large", "blue", "square", "top right", "white"), ("small", "red", "triangle", "bottom left", "blue"),
    ]
]


def held_out_prompts(n: int) -> list[str]:
    try:
        from models.shapes.data import heldout_specs
    except ImportError:
        return (FALLBACK_PROMPTS * (n // len(FALLBACK_PROMPTS) + 1))[:n]
    return [s.prompt for s in heldout_specs()[:n]]


def adherence(images: torch.Tensor, prompts: list[str]) -> tuple[float, float] | None:
    try:
        from models.shapes.metric import prompt_adherence, summarize
    except ImportError:
        return None
    s = summarize(prompt_adherence(images, prompts))
    attrs = [k for k in s if k != "all"]
    return s["all"], sum(s[k] for k in attrs) / len(attrs)


class Renderer:
    """The Scheduler + Sampler + VAEDecode code path on one loaded model, for a batch of prompts."""

    def __init__(self, folder: Path, prompts: list[str], seed: int, cfg: float):
        from graph_runtime import ExecutionContext, Services
        from nodes.conditioning import encode_truncated
        from nodes.model_store import ModelStore
        from nodes.types import Conditioning

        services = Services()
        self.loaded = services.get(ModelStore).load(folder, device=torch.device("cpu"), dtype=torch.float32,
                                                    name=folder.name)
        clip = self.loaded.clip
        self.positive = Conditioning(torch.cat([encode_truncated(clip, p)[0] for p in prompts]), "batch")
        self.negative = Conditioning(encode_truncated(clip, "")[0], "")
        self.latent = {"samples": torch.zeros(len(prompts), 4, 8, 8)}
        self.ctx = ExecutionContext.standalone(services=services)
        self.seed, self.cfg = seed, cfg

    def __call__(self, scheduler: str, steps: int) -> tuple[torch.Tensor, float]:
        from nodes.latents import decode
        from nodes.sampling import make_schedule, run_sampler

        t0 = time.perf_counter()
        schedule = make_schedule(self.loaded.model, scheduler, steps)
        res = run_sampler(self.ctx, self.loaded.model, self.positive, self.negative, self.latent, schedule,
                          self.seed, self.cfg, previews=False)
        images = decode(self.loaded.vae, {"samples": res.samples})
        return images, (time.perf_counter() - t0) / images.shape[0]


def write_plot(rows: list[dict], path: Path, has_adherence: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    panels = [("distance", "mean |pixel - reference|"), ("sec_per_image", "seconds per image")]
    if has_adherence:
        panels.insert(0, ("all", "prompts fully obeyed"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5))
    cmap = plt.get_cmap("tab20")
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, n in enumerate(names):
            pts = [(r["steps"], r[key]) for r in rows if r["scheduler"] == n and r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=n, color=cmap(i % 20),
                        linestyle="-" if i < 10 else "--")
        ax.set_xscale("log")
        ax.set_xlabel("steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from schedulers import registry

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "tiny-shapes-sd"))
    ap.add_argument("--schedulers", default=",".join(registry.names()))
    ap.add_argument("--steps", default="5,10,20,50")
    ap.add_argument("--prompts", type=int, default=16, help="how many held-out prompts")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cfg", type=float, default=6.0)
    ap.add_argument("--reference", default="ddim", help="deterministic solver for the reference")
    ap.add_argument("--reference-steps", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.model).resolve()
    if not (folder / "model_index.json").is_file():
        print(f"no diffusers model folder at {folder}", file=sys.stderr)
        return 2
    names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    prompts = held_out_prompts(args.prompts)
    render = Renderer(folder, prompts, args.seed, args.cfg)
    t_all = time.perf_counter()
    ref, _ = render(args.reference, args.reference_steps)
    ref_adh = adherence(ref, prompts)
    print(f"reference {args.reference} x {args.reference_steps} steps: adherence {ref_adh}", flush=True)
    rows = []
    for n in names:
        for s in steps:
            try:
                images, spi = render(n, s)
            except Exception as exc:  # noqa: BLE001 -- a failing cell is reported, the table goes on
                print(f"{n} x {s}: failed: {exc}", flush=True)
                rows.append({"scheduler": n, "steps": s, "all": None, "attrs": None, "distance": None,
                             "sec_per_image": None, "error": str(exc).splitlines()[0][:60]})
                continue
            adh = adherence(images, prompts)
            row = {"scheduler": n, "steps": s, "all": adh[0] if adh else None, "attrs": adh[1] if adh else None,
                   "distance": float((images - ref).abs().mean()), "sec_per_image": spi}
            rows.append(row)
            print(f"{n} x {s}: {row}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fmt = lambda v, f: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, f)  # noqa: E731
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## Scheduler quality: {folder.name}, {len(prompts)} held-out prompts, seed {args.seed}, cfg {args.cfg}",
        "",
        f"Reference: {args.reference} at {args.reference_steps} steps"
        + (f" (fully obeyed {ref_adh[0]:.2f}, attributes {ref_adh[1]:.2f})" if ref_adh else "")
        + f". CPU, {args.threads} thread(s), load average {load:.1f}; total {time.perf_counter() - t_all:.0f} s.",
        "",
        "| scheduler | steps | fully obeyed | attributes | distance to reference | s / image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['scheduler']} | {r['steps']} | {fmt(r['all'], '.2f')} | {fmt(r['attrs'], '.3f')} | "
                     f"{fmt(r['distance'], '.4f')} | {fmt(r['sec_per_image'], '.4f')} |"
                     + (f" failed: {r['error']}" if r.get("error") else ""))
    (out / "scheduler_quality.md").write_text("\n".join(lines) + "\n")
    write_plot([r for r in rows if r["distance"] is not None], out / "scheduler_quality.png", ref_adh is not None)
    print("\n".join(lines))
    print(f"\nwrote {out / 'scheduler_quality.md'} and {out / 'scheduler_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
