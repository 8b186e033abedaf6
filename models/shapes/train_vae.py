"""Stage 1: train the autoencoder (64x64x3 pictures <-> 8x8x4 latents).

    python -m models.shapes.train_vae --minutes 11

Reconstruction is an L1 loss with a small KL term. Most of the budget trains on random 32x32
crops (the autoencoder is convolutional, so this is four times cheaper); the last part trains on
whole pictures. At the end the latents of the training set give ``scaling_factor`` = 1 / std.
A checkpoint is written every few minutes; running the command again resumes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .arch import make_vae, n_params
from .common import (
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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def latent_std(vae, images: np.ndarray, batch: int = 256) -> float:
    zs = []
    for i in range(0, len(images), batch):
        zs.append(vae.encode(to_tensor(images[i : i + batch])).latent_dist.sample())
    return torch.cat(zs).std().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=11.0)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-5)
    ap.add_argument("--crop-fraction", type=float, default=0.6, help="share of the budget spent on crops")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    args = ap.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)

    images, _ = make_dataset(train_specs(), TRAIN_PER_SPEC, seed=TRAIN_SEED)
    log(f"dataset {images.shape}")
    vae = make_vae()
    log(f"vae parameters {n_params(vae):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    state_path = args.workdir / "vae_state.pt"
    step, already = 0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        step, already = st["step"], st["elapsed"]
        log(f"resumed at step {step}, {already / 60:.1f} min")
    clock = Clock(args.minutes, already)
    rng = np.random.default_rng(1000 + step)
    last_ckpt = clock.elapsed

    def checkpoint() -> None:
        atomic_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": clock.elapsed}, state_path)

    vae.train()
    while not clock.done():
        crop = clock.frac < args.crop_fraction
        bs = 32 if crop else 16
        idx = rng.integers(0, len(images), bs)
        x = to_tensor(images[idx])
        if crop:
            oy, ox = rng.integers(0, 33, 2)
            x = x[:, :, oy : oy + 32, ox : ox + 32]
        for g in opt.param_groups:
            g["lr"] = lr_at(args.lr, step, clock.frac, warmup=100)
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        rec = (y - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = rec + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"step {step} {'crop' if crop else 'full'} rec {rec.item():.4f} kl {kl.item():.3f} lr {opt.param_groups[0]['lr']:.2e}")
        if clock.elapsed - last_ckpt > args.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = clock.elapsed
    checkpoint()

    vae.eval()
    with torch.no_grad():
        sample = images[:: max(1, len(images) // 2048)]
        std = latent_std(vae, sample)
        x = to_tensor(sample[:256])
        mae = (vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1) - x).abs().mean().item() / 2
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(args.workdir / "vae")
    log(f"done: {step} steps, {clock.elapsed / 60:.1f} min, latent std {std:.4f}, "
        f"scaling_factor {1 / std:.4f}, round-trip MAE (0..1) {mae:.4f}")


if __name__ == "__main__":
    main()
