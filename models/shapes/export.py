"""Write the diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).

    python -m models.shapes.export            # from the latest training checkpoint (EMA weights)

Weights are stored as float16 safetensors to keep the folder small; diffusers and transformers
load them as float32 (the text encoder's config names float32 as its dtype).
The tokenizer folder is the one written by ``build_tokenizer`` and is kept as is.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTokenizer

from .arch import make_scheduler, make_text_encoder, make_unet
from .common import DEFAULT_EXPORT, DEFAULT_WORKDIR, log

COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")


def export_pipeline(unet, text_encoder, vae, out: Path = DEFAULT_EXPORT, dtype=torch.float16) -> Path:
    out = Path(out)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    parts = {
        name: copy.deepcopy(m).to(dtype).eval()
        for name, m in (("unet", unet), ("text_encoder", text_encoder), ("vae", vae))
    }
    pipe = StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=tokenizer,
        unet=parts["unet"],
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for name in COMPONENTS:
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.move(str(Path(tmp) / name), str(out / name))
        shutil.copy(Path(tmp) / "model_index.json", out / "model_index.json")
    # Weights are stored in float16, but the model is meant to run in float32 on CPU: transformers
    # loads in the dtype its config names, so name float32 there (diffusers loads float32 already).
    cfg_path = out / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def load_ema(state: dict):
    """UNet and text encoder carrying the EMA weights of a training checkpoint."""
    unet, te = make_unet(), make_text_encoder()
    params = list(unet.parameters()) + list(te.parameters())
    with torch.no_grad():
        for p, e in zip(params, state["ema"], strict=True):
            p.copy_(e)
    return unet, te


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_EXPORT)
    ap.add_argument("--vae", type=Path, default=None, help="default: <workdir>/vae_ft if present, else <workdir>/vae")
    args = ap.parse_args()
    if args.vae is None:
        args.vae = args.workdir / "vae_ft" if (args.workdir / "vae_ft").exists() else args.workdir / "vae"
    state = torch.load(args.workdir / "unet_state.pt", weights_only=False)
    unet, te = load_ema(state)
    vae = AutoencoderKL.from_pretrained(args.vae)
    export_pipeline(unet, te, vae, args.out)
    log(f"exported step {state['step']} (vae {args.vae}) to {args.out}")


if __name__ == "__main__":
    main()
