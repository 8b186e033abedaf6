"""Each model family's graph vs its own diffusers pipeline, same work, one process.

    python bench/bench_families.py                       # tiny SD2.x-v, SDXL, SD3, Flux dev, Z-Image, Qwen-Image
    python bench/bench_families.py --steps 30 --repeats 7 --families sd3,flux-dev

The tiny random-weight models of the tests (tests/tiny_families.py) are built in a temporary folder. For each
family and scheduler both sides encode the prompt and the empty negative, sample with classifier-free guidance
and decode: "ours" is LoadModel -> TextEncode x2 -> EmptyLatent -> Scheduler -> Sampler -> VAEDecode run by an
Executor without result cache (loaded models are shared, as the pipeline keeps its own); "diffusers" is the
family's pipeline with the scheduler swapped the guide's way. Flux has no classifier-free guidance: one
prompt, cfg 1, the guidance embedding at 3.5 and a Scheduler sized by the latent (tests/test_family_flux.py's
graph) against FluxPipeline. Z-Image's pipeline takes cfg - 1 as its guidance_scale and its own sigmas; Qwen-Image's
guidance is its true_cfg_scale. Warm-up once, then best-of-N, alternating. The table gives ours / diffusers
(below 1 is faster) and the largest pixel difference (0 = identical).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SCHEDULERS = {"sd2v": ("ddim", "dpmpp_2m"), "sdxl": ("euler", "dpmpp_2m"), "sd3": ("flow_euler", "flow_dpmpp_2m"),
              "flux-dev": ("flow_euler", "flow_dpmpp_2m"), "z-image": ("flow_euler", "flow_unipc"),
              "qwen-image": ("flow_euler", "flow_unipc")}
CFG = 6.0


def pipeline_kwargs(family: str, steps: int) -> dict:
    """The pipeline's own arguments for our graph's guidance (cfg 6 and the empty negative; Flux: none)."""
    if family.startswith("flux"):
        return {"guidance_scale": 3.5}
    if family == "z-image":
        import numpy as np
        from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

        return {"negative_prompt": "", "guidance_scale": CFG - 1,
                "sigmas": np.asarray(get_default_z_image_sigmas(steps))}
    if family == "qwen-image":
        return {"negative_prompt": "", "true_cfg_scale": CFG}
    return {"negative_prompt": "", "guidance_scale": CFG}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(SCHEDULERS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import test_family_flux
    import tiny_flux  # noqa: F401  (registers the Flux builders)
    from diffusers import DiffusionPipeline
    from nodes_support import make_registry
    from test_families_parity import PROMPT, graph
    from tiny_families import BUILDERS

    from nodes.stand_ins.tiny import build_qwen_image, build_z_image

    builders = {**BUILDERS, "z-image": build_z_image, "qwen-image": build_qwen_image}

    from graph_runtime import Executor, RuntimePaths, Services
    from nodes.model_store import _own_aligned_memory
    from schedulers import registry

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for family in args.families.split(","):
            folder = root / "models" / f"tiny-{family}"
            builders[family](root / f"{family}_src").save_pretrained(folder)
            pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            for module in pipe.components.values():  # as the runtime keeps its weights (see model_store)
                if isinstance(module, torch.nn.Module):
                    _own_aligned_memory(module)
            base = dict(pipe.scheduler.config)
            os.environ["GRAPH_RUNTIME_MODELS"] = str(root / "models")
            paths = RuntimePaths(base=root / f"run_{family}")
            for d in (paths.input, paths.output, paths.temp):
                d.mkdir(parents=True, exist_ok=True)
            executor = Executor(make_registry(), cache="none", paths=paths, services=Services())
            for name in SCHEDULERS[family]:
                entry = registry.get(name)
                with registry.quiet_diffusers():
                    pipe.scheduler = entry.cls.from_config(base, **entry.config_overrides(base))
                flux = family.startswith("flux")
                doc = (test_family_flux.graph(f"tiny-{family}", name, 1, steps=args.steps) if flux
                       else graph(f"tiny-{family}", name, 1, steps=args.steps, cfg=CFG))
                guided = pipeline_kwargs(family, args.steps)

                def ours(executor=executor, doc=doc):
                    res = executor.run(doc, targets=["7"])  # the decoded tensor, as the pipeline's (no PNG)
                    assert res.status == "success", res.error
                    return res.values["7"][0]

                def theirs(pipe=pipe, guided=guided):
                    return pipe(PROMPT, num_inference_steps=args.steps, height=64, width=64, **guided,
                                generator=torch.Generator("cpu").manual_seed(1),
                                output_type="pt").images.permute(0, 2, 3, 1)

                a, b = ours(), theirs()  # warm-up
                best = {"ours": float("inf"), "diffusers": float("inf")}
                for _ in range(args.repeats):
                    for label, fn in (("ours", ours), ("diffusers", theirs)):
                        t0 = time.perf_counter()
                        fn()
                        best[label] = min(best[label], time.perf_counter() - t0)
                rows.append((family, name, best["ours"], best["diffusers"], (a - b).abs().max().item()))
    print(f"{'family':8} {'scheduler':14} {'ours s':>8} {'diffusers s':>12} {'ratio':>6} {'max diff':>9}")
    for family, name, o, d, diff in rows:
        print(f"{family:8} {name:14} {o:8.3f} {d:12.3f} {o / d:6.3f} {diff:9.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
