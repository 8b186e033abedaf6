"""Sampler node vs diffusers' StableDiffusionPipeline, same work, one process.

    python bench/bench_sampler.py                                  # embedded model, CPU, 20 steps
    python bench/bench_sampler.py --schedulers euler,unipc --steps 30 --repeats 7
    python bench/bench_sampler.py --device cuda --dtype fp16       # on a GPU

For each scheduler both sides do the same work: encode the prompt and the empty negative, sample with
classifier-free guidance and decode. "Ours" is workflows/txt2img.json run by an Executor without result cache
(every node runs each time; loaded models are shared, as the pipeline keeps its own); "diffusers" is the
pipeline with the scheduler swapped the guide's way. Each side is warmed up once, then timed best-of-N,
alternating. The table gives the ratio ours / diffusers (below 1 is faster) and the largest pixel
difference between the two images (0 = identical).

It also times a seed-only rerun of the whole workflow (cached executor: only Sampler, VAEDecode and SaveImage
run again) against the first run of a fresh executor (which loads the model).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PROMPT = "a large red circle in the center on a blue background"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _node(doc: dict, class_type: str) -> str:
    return next(k for k, v in doc.items() if v["class_type"] == class_type)


def make_workflow(model_name: str, device: str, dtype: str, size: int, scheduler: str, steps: int, seed: int,
                  cfg: float, prompt: str = PROMPT) -> dict:
    doc = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    doc[_node(doc, "LoadModel")]["inputs"].update(model_name=model_name, device=device, dtype=dtype)
    for nid, node in doc.items():
        if node["class_type"] == "TextEncode" and node["inputs"]["text"]:
            doc[nid]["inputs"]["text"] = prompt
    doc[_node(doc, "EmptyLatent")]["inputs"].update(width=size, height=size)
    doc[_node(doc, "Scheduler")]["inputs"].update(scheduler=scheduler, steps=steps)
    doc[_node(doc, "Sampler")]["inputs"].update(seed=seed, cfg=cfg)
    return doc


def make_executor(base: Path, cache: str, services=None):
    import nodes
    from graph_runtime import Executor, RuntimePaths, default_registry

    reg = default_registry(with_entry_points=False)
    nodes.register(reg)
    paths = RuntimePaths(base=base)
    for p in (paths.input, paths.output, paths.temp):
        p.mkdir(parents=True, exist_ok=True)
    return Executor(reg, cache=cache, paths=paths, services=services)


def load_pipeline(folder: Path, device: str, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False,
                                                   local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def swap(pipe, base_config: dict, name: str, seed: int) -> None:
    from schedulers import registry

    entry = registry.get(name)
    ov = dict(entry.overrides)
    if entry.seed_config_key:
        ov[entry.seed_config_key] = seed
    with registry.quiet_diffusers():
        pipe.scheduler = entry.cls.from_config(base_config, **ov)


@contextmanager
def models_folder(folder: Path):
    """Make ``folder``'s parent a models folder (GRAPH_RUNTIME_MODELS) for a while."""
    before = os.environ.get("GRAPH_RUNTIME_MODELS")
    os.environ["GRAPH_RUNTIME_MODELS"] = str(Path(folder).resolve().parent)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRAPH_RUNTIME_MODELS", None)
        else:
            os.environ["GRAPH_RUNTIME_MODELS"] = before


def compare(folder: Path, *, schedulers: list[str], steps: int, size: int, device: str, dtype_name: str,
            repeats: int, seed: int = 42, cfg: float = 6.0, prompt: str = PROMPT, log=print) -> list[dict]:
    """Time ours vs the pipeline for each scheduler; rows of results."""
    with models_folder(folder):
        return _compare(folder, schedulers=schedulers, steps=steps, size=size, device=device,
                        dtype_name=dtype_name, repeats=repeats, seed=seed, cfg=cfg, prompt=prompt, log=log)


def _compare(folder, *, schedulers, steps, size, device, dtype_name, repeats, seed, cfg, prompt, log):
    from graph_runtime import Services
    from nodes.device import resolve_dtype

    folder = Path(folder).resolve()
    dtype = resolve_dtype(dtype_name, torch.device(device))
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    services = Services()
    ex = make_executor(tmp, "none", services)
    pipe = load_pipeline(folder, device, dtype)
    base_config = dict(pipe.scheduler.config)
    rows = []
    for name in schedulers:
        doc = make_workflow(folder.name, device, dtype_name, size, name, steps, seed, cfg, prompt)
        decode = _node(doc, "VAEDecode")

        def ours(doc=doc, decode=decode):
            res = ex.run(doc, targets=[decode])
            if res.status != "success":
                raise RuntimeError(res.error)
            _sync(device)
            return res.values[decode][0]

        def theirs(name=name):
            swap(pipe, base_config, name, seed)  # as the guide does it, inside the timed work
            out = pipe(prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=cfg, height=size,
                       width=size, generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
            _sync(device)
            return out.permute(0, 2, 3, 1).float().cpu()

        a, b = ours(), theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            for fn, acc in ((ours, t_ours), (theirs, t_theirs)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
        diff = (a - b).abs().max().item()
        row = {"scheduler": name, "steps": steps, "ours_s": min(t_ours), "diffusers_s": min(t_theirs),
               "ratio": min(t_ours) / min(t_theirs), "max_pixel_diff": diff, "finite": bool(torch.isfinite(a).all())}
        log(f"  {name}: ours {row['ours_s']:.3f} s, diffusers {row['diffusers_s']:.3f} s, "
            f"ratio {row['ratio']:.3f}, max diff {diff:.3g}")
        rows.append(row)
    return rows


def seed_rerun(folder: Path, *, scheduler: str, steps: int, size: int, device: str, dtype_name: str,
               seed: int = 42, cfg: float = 6.0) -> dict:
    """First run of a fresh executor (model load included) vs a rerun with only the seed changed."""
    with models_folder(folder):
        return _seed_rerun(Path(folder).resolve(), scheduler=scheduler, steps=steps, size=size, device=device,
                           dtype_name=dtype_name, seed=seed, cfg=cfg)


def _seed_rerun(folder, *, scheduler, steps, size, device, dtype_name, seed, cfg):
    ex = make_executor(Path(tempfile.mkdtemp(prefix="bench-sampler-")), "last")
    doc = make_workflow(folder.name, device, dtype_name, size, scheduler, steps, seed, cfg)
    t0 = time.perf_counter()
    first = ex.run(doc)
    _sync(device)
    t_first = time.perf_counter() - t0
    doc2 = copy.deepcopy(doc)
    doc2[_node(doc2, "Sampler")]["inputs"]["seed"] = seed + 1
    t0 = time.perf_counter()
    second = ex.run(doc2)
    _sync(device)
    t_second = time.perf_counter() - t0
    assert first.status == second.status == "success", (first.error, second.error)
    return {"first_s": t_first, "rerun_s": t_second, "rerun_executed": sorted(
        doc2[n]["class_type"] for n in second.executed)}


def markdown(rows: list[dict], rerun: dict | None, header: str) -> str:
    out = [header, "", "| scheduler | steps | ours (s) | diffusers (s) | ratio | max pixel diff |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['scheduler']} | {r['steps']} | {r['ours_s']:.3f} | {r['diffusers_s']:.3f} | "
                   f"{r['ratio']:.3f}x | {r['max_pixel_diff']:.3g} |")
    if rows:
        geo = 1.0
        for r in rows:
            geo *= r["ratio"]
        out.append(f"\ngeometric mean ratio: {geo ** (1 / len(rows)):.3f}x")
    if rerun:
        out += ["", "| whole workflow | seconds |", "|---|---:|",
                f"| first run (fresh executor, model load) | {rerun['first_s']:.3f} |",
                f"| seed-only rerun ({', '.join(rerun['rerun_executed'])}) | {rerun['rerun_s']:.3f} |",
                f"| ratio rerun / first | {rerun['rerun_s'] / rerun['first_s']:.3f}x |"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "tiny-shapes-sd"), help="diffusers model folder")
    ap.add_argument("--schedulers", default="euler,dpmpp_2m,unipc,euler_ancestral,ddim")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    ap.add_argument("--no-rerun", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.model)
    if not (folder / "model_index.json").is_file():
        print(f"no diffusers model folder at {folder}", file=sys.stderr)
        return 2
    names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    rows = compare(folder, schedulers=names, steps=args.steps, size=args.size, device=args.device,
                   dtype_name=args.dtype, repeats=args.repeats)
    rerun = None if args.no_rerun else seed_rerun(folder, scheduler=names[0], steps=args.steps, size=args.size,
                                                  device=args.device, dtype_name=args.dtype)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"## Sampler vs StableDiffusionPipeline: {folder.name}, {args.size}x{args.size}, {args.steps} steps, "
              f"{args.device} {args.dtype}, {args.threads} thread(s), best of {args.repeats} (load avg {load:.1f})")
    print(markdown(rows, rerun, header))
    bad = [r for r in rows if r["max_pixel_diff"] != 0]
    if bad:
        print(f"\nnot pixel-identical: {', '.join(r['scheduler'] for r in bad)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
