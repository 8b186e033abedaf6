"""Stage 2: train the UNet and the text encoder together on pre-encoded latents.

    python -m models.shapes.train --minutes 72

The training pictures are encoded once by the stage-1 autoencoder (posterior mean and std are kept,
so every step draws a fresh latent sample). Noise schedule: Stable Diffusion 1.5's (scaled_linear,
1000 steps, epsilon prediction), loss weighted by min-SNR (gamma 5). About 10% of prompts are
replaced by the empty prompt so that classifier-free guidance works. An exponential moving average
of the weights is kept and is what gets exported.

Every ``--checkpoint-minutes`` a resumable checkpoint is written and the EMA weights are exported to
``models/tiny-shapes-sd`` (a first export happens after ``--first-export-minutes``). Running the
command again resumes from the checkpoint. ``--steps N`` replaces the time budget by a step count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTokenizer

from .arch import MAX_LENGTH, SD15_SCHEDULER, make_text_encoder, make_unet, n_params
from .common import (
    DEFAULT_EXPORT,
    DEFAULT_WORKDIR,
    TRAIN_PER_SPEC,
    TRAIN_SEED,
    Clock,
    atomic_save,
    log,
    lr_at,
    setup_threads,
)
from .data import make_dataset, train_specs
from .export import export_pipeline
from .train_vae import to_tensor


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(to_tensor(images[i : i + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=72.0)
    ap.add_argument("--steps", type=int, default=0, help="train this many steps instead of a time budget")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--export", type=Path, default=DEFAULT_EXPORT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--uncond-prob", type=float, default=0.1)
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--first-export-minutes", type=float, default=3.0)
    args = ap.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)

    tokenizer = CLIPTokenizer.from_pretrained(args.export / "tokenizer", model_max_length=MAX_LENGTH)
    vae = AutoencoderKL.from_pretrained(args.workdir / "vae").eval()
    scaling = vae.config.scaling_factor

    specs = train_specs()
    lat_path = args.workdir / "latents.pt"
    if lat_path.exists():
        lat = torch.load(lat_path)
    else:
        images, _ = make_dataset(specs, TRAIN_PER_SPEC, seed=TRAIN_SEED)
        torch.set_num_threads(2)  # encoding happens once; use both cores for it
        mean, std = encode_latents(vae, images)
        torch.set_num_threads(args.threads)
        lat = {"mean": mean, "std": std}
        atomic_save(lat, lat_path)
        del images
    mean, std = lat["mean"], lat["std"]
    spec_of = torch.arange(len(mean)) // TRAIN_PER_SPEC
    prompt_ids = tokenize(tokenizer, [s.prompt for s in specs])
    empty_ids = tokenize(tokenizer, [""])[0]
    log(f"latents {tuple(mean.shape)}, scaling_factor {scaling:.4f}, {len(specs)} training prompts")

    unet, te = make_unet(), make_text_encoder()
    log(f"parameters: unet {n_params(unet):,}, text encoder {n_params(te):,}")
    params = list(unet.parameters()) + list(te.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    noise_sched = DDPMScheduler.from_config(SD15_SCHEDULER)
    alphas = noise_sched.alphas_cumprod
    snr_all = alphas / (1 - alphas)

    state_path = args.workdir / "unet_state.pt"
    step, already = 0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
        opt.load_state_dict(st["opt"])
        with torch.no_grad():
            for e, s in zip(ema, st["ema"], strict=True):
                e.copy_(s)
        step, already = st["step"], st["elapsed"]
        log(f"resumed at step {step}, {already / 60:.1f} min")
    clock = Clock(args.minutes, already)
    gen = torch.Generator().manual_seed(10_000 + step)

    def frac() -> float:
        return step / args.steps if args.steps else clock.frac

    def finished() -> bool:
        return step >= args.steps if args.steps else clock.done()

    def ema_modules():
        u, t = make_unet(), make_text_encoder()
        with torch.no_grad():
            for p, e in zip(list(u.parameters()) + list(t.parameters()), ema, strict=True):
                p.copy_(e)
        return u, t

    def checkpoint(export: bool) -> None:
        atomic_save(
            {"unet": unet.state_dict(), "te": te.state_dict(), "ema": ema, "opt": opt.state_dict(),
             "step": step, "elapsed": clock.elapsed, "args": vars(args) | {"workdir": str(args.workdir), "export": str(args.export)}},
            state_path,
        )
        if export:
            u, t = ema_modules()
            export_pipeline(u, t, vae, args.export)
            log(f"exported EMA weights at step {step} to {args.export}")

    last_ckpt = clock.elapsed
    exported_once = already > args.first_export_minutes * 60
    unet.train()
    te.train()
    run_loss, t_log = 0.0, clock.elapsed
    while not finished():
        bs = args.batch
        idx = torch.randint(0, len(mean), (bs,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling
        ids = prompt_ids[spec_of[idx]].clone()
        drop = torch.rand(bs, generator=gen) < args.uncond_prob
        ids[drop] = empty_ids
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (bs,), generator=gen)
        zt = noise_sched.add_noise(z, noise, t)
        for g in opt.param_groups:
            g["lr"] = lr_at(args.lr, step, frac())
        hidden = te(ids)[0]
        pred = unet(zt, t, encoder_hidden_states=hidden).sample
        snr = snr_all[t]
        weight = torch.clamp(snr, max=args.snr_gamma) / snr
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        run_loss += loss.item()
        if step % 100 == 0:
            now = clock.elapsed
            log(f"step {step} loss {run_loss / 100:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{100 / (now - t_log):.2f} steps/s elapsed {now / 60:.1f} min")
            run_loss, t_log = 0.0, now
        if not exported_once and clock.elapsed > args.first_export_minutes * 60:
            checkpoint(export=True)
            exported_once, last_ckpt = True, clock.elapsed
        elif clock.elapsed - last_ckpt > args.checkpoint_minutes * 60:
            checkpoint(export=True)
            last_ckpt = clock.elapsed
    checkpoint(export=True)
    log(f"done: {step} steps, {clock.elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
