"""GPU check: a full-size Stable Diffusion 1.5 (random weights) at 512x512 in fp16 on CUDA, our Sampler workflow
vs diffusers' StableDiffusionPipeline, same scheduler / seed / steps: time ratio and largest pixel difference.

    python bench/gpu_check.py                       # needs CUDA; exits 0 with a message without it
    python bench/gpu_check.py --dry-run             # a tiny model on the CPU, to check the script itself
    python bench/gpu_check.py --family flux         # Flux.1-dev at full size, bf16, 1024x1024
    python bench/gpu_check.py --family z_image      # Z-Image Turbo at full size, bf16, 1024x1024

The model is built from the shipped configs (models/configs/stable-diffusion-v1-5: UNet, VAE, text encoder,
tokenizer, scheduler) with seeded random weights (small normal init, so fp16 activations stay finite), saved as
a diffusers folder in a temporary directory and loaded by both sides from there. The whole check takes well
under 5 minutes on an H100, model set-up included.

``--family flux``: Flux.1-dev's full architecture from models/configs/flux1-dev (12B transformer, T5-XXL,
CLIP-L from the SD1.5 text encoder config, 16-channel VAE), random bf16 weights built on the GPU (about 34 GB,
no files written), FluxPipeline vs the family's encode + the Sampler's run_sampler + VAE decode over the same
modules, at 1024x1024 (guidance 3.5, cfg 1, the resolution-dependent shift).

``--family z_image``: Z-Image Turbo's full architecture from models/configs/z-image-turbo (6B S3-DiT, Qwen3-4B,
the Flux VAE), random bf16 weights on the GPU, ZImagePipeline (guidance_scale 0, its own sigmas) vs the same
family path at cfg 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

SD15 = REPO / "models" / "configs" / "stable-diffusion-v1-5"


def _small_init(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1:
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.device, p.dtype))


def build_model(folder: Path, *, tiny: bool, device: str, dtype: torch.dtype) -> Path:
    """Write a Stable Diffusion folder with seeded random weights: SD1.5's architecture, or a tiny one."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(SD15 / "tokenizer"), local_files_only=True)
    scheduler = PNDMScheduler.from_config(json.loads((SD15 / "scheduler" / "scheduler_config.json").read_text()))
    with torch.device(device):
        if tiny:
            unet = UNet2DConditionModel(
                sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(32, 32, 32, 32), sample_size=64)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407, projection_dim=32))
        else:
            unet = UNet2DConditionModel.from_config(json.loads((SD15 / "unet" / "config.json").read_text()))
            vae = AutoencoderKL.from_config(json.loads((SD15 / "vae" / "config.json").read_text()))
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(SD15 / "text_encoder"),
                                                                        local_files_only=True))
    for i, m in enumerate((unet, vae, text_encoder)):
        _small_init(m, seed=i)
        m.to(dtype)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe, unet, vae, text_encoder
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def build_flux(device: str, dtype: torch.dtype, *, tiny: bool, workdir: Path):
    """A FluxPipeline with seeded random weights: Flux.1-dev's architecture, or the tests' tiny one."""
    if tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_flux import build_flux as tiny_flux

        return tiny_flux(workdir)
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    dev = REPO / "models" / "configs" / "flux1-dev"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in bf16 on the GPU: no fp32 copy of 17B weights
    try:
        with torch.device(device):
            config = json.loads((dev / "transformer" / "config.json").read_text())
            transformer = FluxTransformer2DModel.from_config(config)
            vae = AutoencoderKL.from_config(json.loads((dev / "vae" / "config.json").read_text()))
            clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(SD15 / "text_encoder"), local_files_only=True))
            t5 = T5EncoderModel(T5Config.from_pretrained(str(dev / "text_encoder_2"), local_files_only=True))
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        json.loads((dev / "scheduler" / "scheduler_config.json").read_text()))
    return FluxPipeline(scheduler=scheduler, vae=vae.to(dtype), text_encoder=clip.to(dtype),
                        text_encoder_2=t5.to(dtype),
                        tokenizer=CLIPTokenizer.from_pretrained(str(SD15 / "tokenizer"), local_files_only=True),
                        tokenizer_2=T5TokenizerFast.from_pretrained(str(REPO / "models" / "tokenizers" / "t5")),
                        transformer=transformer.to(dtype))


def build_z_image(device: str, dtype: torch.dtype, *, tiny: bool, workdir: Path):
    """A ZImagePipeline with seeded random weights: Z-Image Turbo's architecture, or the stand-ins' tiny one."""
    from nodes.stand_ins.tiny import build_z_image as tiny_z_image

    if tiny:
        return tiny_z_image(workdir)
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    folder = REPO / "models" / "configs" / "z-image-turbo"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = ZImageTransformer2DModel.from_config(
                json.loads((folder / "transformer" / "config.json").read_text()))
            vae = AutoencoderKL.from_config(json.loads((folder / "vae" / "config.json").read_text()))
            text_encoder = Qwen3Model(Qwen3Config.from_pretrained(str(folder / "text_encoder"), local_files_only=True))
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(str(REPO / "models" / "tokenizers" / "qwen3"))
    return ZImagePipeline(scheduler=scheduler, vae=vae.to(dtype), text_encoder=text_encoder.to(dtype),
                          tokenizer=tokenizer, transformer=transformer.to(dtype))


#: per flow family: builder, text-encoder slots (slot -> pipeline tokenizer / encoder attributes), the
#: pipeline's arguments for our cfg-1 run, the model's label
FLOW_FAMILIES = {
    "flux": (build_flux, {"clip_l": ("tokenizer", "text_encoder"), "t5": ("tokenizer_2", "text_encoder_2")},
             lambda steps: {"guidance_scale": 3.5}, "Flux.1-dev"),
    "z_image": (build_z_image, {"qwen3": ("tokenizer", "text_encoder")},
                lambda steps: {"guidance_scale": 0.0, "sigmas": _z_image_sigmas(steps)}, "Z-Image Turbo"),
}


def _z_image_sigmas(steps: int):
    import numpy as np
    from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

    return np.asarray(get_default_z_image_sigmas(steps))


def flow_check(family_name: str, *, dry_run: bool, steps: int, repeats: int, schedulers: list[str]) -> int:
    from graph_runtime.context import ExecutionContext
    from nodes import families
    from nodes.families.base import TextEncoder
    from nodes.latents import decode
    from nodes.sampling import make_schedule, run_sampler
    from nodes.types import ModelBundle, TextEncoderBundle, VAEBundle
    from schedulers import registry

    device, dtype, size = ("cpu", torch.float32, 64) if dry_run else ("cuda", torch.bfloat16, 1024)
    prompt, seed = "a photo of a red circle", 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build, slots, pipeline_kwargs, model_label = FLOW_FAMILIES[family_name]
        pipe = build(device, dtype, tiny=dry_run, workdir=Path(tmp))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():  # built, not loaded: still in training mode (T5's dropout)
        if isinstance(module, torch.nn.Module):
            module.eval()
    print(f"{model_label} model built in {time.perf_counter() - t0:.1f} s")
    family = families.by_name(family_name)
    base = {"_class_name": type(pipe.scheduler).__name__, **pipe.scheduler.config}  # built, never saved
    dev = torch.device(device)
    model = ModelBundle(pipe.transformer, family, base, dev, dtype, f"{family_name}-random", "memory")
    clip = TextEncoderBundle(family, {slot: TextEncoder(getattr(pipe, tok), getattr(pipe, enc))
                                      for slot, (tok, enc) in slots.items()}, dev, dtype, "clip")
    vae = VAEBundle(vae=pipe.vae, scaling_factor=float(pipe.vae.config.scaling_factor), device=dev, dtype=dtype,
                    name="ae", shift_factor=float(pipe.vae.config.shift_factor))
    ctx = ExecutionContext.standalone()
    rows = []
    for name in schedulers:
        entry = registry.get(name)
        with registry.quiet_diffusers():
            pipe.scheduler = entry.cls.from_config(base, **entry.config_overrides(base))

        def ours(name=name):
            cond = family.encode(clip, prompt)
            latent = {"samples": torch.zeros(1, 16, size // 8, size // 8, device=dev, dtype=dtype)}
            schedule = make_schedule(model, name, steps, latent_shape=tuple(latent["samples"].shape))
            res = run_sampler(ctx, model, cond, None, latent, schedule, seed, 1.0, previews=False)
            return decode(vae, {"samples": res.samples})

        def theirs():
            with torch.inference_mode():
                out = pipe(prompt, num_inference_steps=steps, height=size, width=size, **pipeline_kwargs(steps),
                           generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
            return out.permute(0, 2, 3, 1).float().cpu()

        a, b = ours(), theirs()  # warm-up
        best = {"ours": float("inf"), "diffusers": float("inf")}
        for _ in range(repeats):
            for label, fn in (("ours", ours), ("diffusers", theirs)):
                _sync(device)
                t1 = time.perf_counter()
                fn()
                _sync(device)
                best[label] = min(best[label], time.perf_counter() - t1)
        rows.append((name, best["ours"], best["diffusers"], (a - b).abs().max().item(), bool(torch.isfinite(a).all())))
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    print(f"## gpu_check: {model_label} random {size}x{size} {str(dtype).removeprefix('torch.')} on {where}, "
          f"{steps} steps, best of {repeats}; total {time.perf_counter() - t0:.0f} s")
    print("| scheduler | steps | ours s | diffusers s | ratio | max diff | finite |")
    print("|---|---|---|---|---|---|---|")
    for name, o, d, diff, finite in rows:
        print(f"| {name} | {steps} | {o:.3f} | {d:.3f} | {o / d:.3f} | {diff:.3g} | {finite} |")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (model, both sides' runs)")
    return 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    import bench_sampler

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (checks the script, no GPU)")
    ap.add_argument("--schedulers", default="euler,dpmpp_2m,unipc")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--family", choices=("sd15", *FLOW_FAMILIES), default="sd15")
    args = ap.parse_args(argv)
    if args.family in FLOW_FAMILIES:
        if not args.dry_run and not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; nothing to check (use --dry-run to test the script on the CPU)")
            return 0
        if args.dry_run:
            torch.set_num_threads(1)
        names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
        return flow_check(args.family, dry_run=args.dry_run, steps=args.steps, repeats=args.repeats,
                          schedulers=[n if n.startswith("flow_") else f"flow_{n}" for n in names])
    if args.dry_run:
        device, dtype_name, size = "cpu", "fp32", 64
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; nothing to check (use --dry-run to test the script on the CPU)")
            return 0
        device, dtype_name, size = "cuda", "fp16", 512
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        t0 = time.perf_counter()
        folder = build_model(tmp / "models" / ("tiny-random-sd" if args.dry_run else "sd15-random"),
                             tiny=args.dry_run, device=device, dtype=dtype)
        print(f"model built and saved in {time.perf_counter() - t0:.1f} s")
        names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
        rows = bench_sampler.compare(folder, schedulers=names, steps=args.steps, size=size, device=device,
                                     dtype_name=dtype_name, repeats=args.repeats, prompt="a photo of a red circle")
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
        header = (f"## gpu_check: {folder.name} {size}x{size} {dtype_name} on {name}, {args.steps} steps, "
                  f"best of {args.repeats}; total {time.perf_counter() - t0:.0f} s")
        print(bench_sampler.markdown(rows, None, header))
        if not all(r["finite"] for r in rows):
            print("warning: some images are not finite")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
