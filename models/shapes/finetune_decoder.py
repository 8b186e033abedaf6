"""Stage 2b: keep training the autoencoder's decoder with the encoder frozen.

    python -m models.shapes.finetune_decoder --minutes 55

The latents the UNet learns are those of the frozen encoder (``latents.pt`` written by
``models.shapes.train``), so the decoder can go on improving while the UNet trains, on the
other core. Loss: L1 + MSE between the decoded latent samples and the pictures. The result is
written to ``<workdir>/vae_ft`` (same ``scaling_factor``), which the export prefers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from .common import DEFAULT_WORKDIR, TRAIN_PER_SPEC, TRAIN_SEED, Clock, atomic_save, log, lr_at, setup_threads
from .data import make_dataset, train_specs
from .train_vae import to_tensor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=55.0)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    args = ap.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(1)

    lat = torch.load(args.workdir / "latents.pt")
    mean, std = lat["mean"], lat["std"]
    images, _ = make_dataset(train_specs(), TRAIN_PER_SPEC, seed=TRAIN_SEED)
    assert len(images) == len(mean)
    state_path = args.workdir / "vae_ft_state.pt"
    vae = AutoencoderKL.from_pretrained(args.workdir / "vae")
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step, already = 0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        step, already = st["step"], st["elapsed"]
        log(f"resumed at step {step}")
    clock = Clock(args.minutes, already)
    rng = np.random.default_rng(2000 + step)
    vae.train()

    def save() -> None:
        atomic_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": clock.elapsed}, state_path)
        vae.save_pretrained(args.workdir / "vae_ft")

    last = clock.elapsed
    run = 0.0
    while not clock.done():
        idx = torch.from_numpy(rng.integers(0, len(images), args.batch))
        x = to_tensor(images[idx.numpy()])
        z = mean[idx] + std[idx] * torch.randn_like(mean[idx])
        for g in opt.param_groups:
            g["lr"] = lr_at(args.lr, step, clock.frac, warmup=50)
        y = vae.decode(z).sample
        loss = (y - x).abs().mean() + (y - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run += loss.item()
        if step % 50 == 0:
            log(f"step {step} loss {run / 50:.4f} lr {opt.param_groups[0]['lr']:.2e}")
            run = 0.0
        if clock.elapsed - last > args.checkpoint_minutes * 60:
            save()
            last = clock.elapsed
    save()
    log(f"done: {step} steps, {clock.elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
