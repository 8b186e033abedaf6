"""A tiny random-weight Z-Image (ZImagePipeline at toy size, the stand-ins' builder) and its parts in the
single-file layouts users keep (ComfyUI's folders), written from the diffusers weights so that loading them
back can be compared (the writers are the stand-ins' too, nodes.stand_ins.layouts).

* the diffusion model as the original checkpoint names it (``z_image_turbo_bf16.safetensors``): fused
  ``attention.qkv``, ``attention.out``, ``q_norm`` / ``k_norm``, ``x_embedder`` and ``final_layer`` without
  the patch-size key -- the inverse of diffusers' single-file conversion;
* the Qwen3 text encoder as transformers' causal-LM names it (``qwen_3_4b.safetensors``: ``model.`` + the
  Qwen3Model's own names);
* the VAE in the original (LDM) layout (``ae.safetensors``), as the SD3 writer does it.

The model: a 2-layer S3-DiT (dim 32, two heads of 16 = rope axes 8 + 4 + 4) over 16-channel latents, a
3-layer Qwen3 (width 32, one key/value head) with the real Qwen3 vocabulary the project ships, and a 4-level
VAE: 64x64 images, 8x8 latents, 16 image tokens.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from single_files import save

from nodes.checkpoint import VAE_PREFIX, vae_to_ldm
from nodes.model_store import _own_aligned_memory
from nodes.stand_ins.layouts import qwen3_causal_lm, z_image_original
from nodes.stand_ins.tiny import build_z_image

ROOT = Path(__file__).resolve().parent.parent
#: the file names ComfyUI's Z-Image Turbo workflow uses
COMFY_NAMES = {"unet": "z_image_turbo_bf16.safetensors", "qwen3": "qwen_3_4b.safetensors", "vae": "ae.safetensors"}


_SHARED: dict[str, SimpleNamespace] = {}


def shared_zimage(tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny Z-Image per test session: ``folder`` (``tiny-zimage`` inside ``models``, a
    models folder), ``pipe`` (ZImagePipeline loaded back from the folder), ``config`` (its scheduler
    config), ``files`` (its parts as single files in ``models``' ComfyUI folders, under ComfyUI's names)."""
    if "zimage" not in _SHARED:
        from diffusers import ZImagePipeline

        models = tmp_path_factory.mktemp("tiny_zimage")
        folder = models / "tiny-zimage"
        build_z_image(models).save_pretrained(folder)
        pipe = ZImagePipeline.from_pretrained(str(folder), local_files_only=True).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():  # as the runtime keeps them (aligned CPU memory)
            if isinstance(module, torch.nn.Module):
                _own_aligned_memory(module)
        files = write_zimage_parts(pipe, models)
        _SHARED["zimage"] = SimpleNamespace(folder=folder, models=models, pipe=pipe, files=files,
                                            config=dict(pipe.scheduler.config))
    return _SHARED["zimage"]


def write_zimage_parts(pipe, root: Path, names: dict | None = None, dtype: torch.dtype | None = None) -> dict:
    """Z-Image's parts in ComfyUI's folders under ``root`` (ComfyUI's file names unless ``names``)."""
    names = dict(names or COMFY_NAMES)
    save(z_image_original(pipe.transformer), root / "diffusion_models" / names["unet"], dtype)
    save(qwen3_causal_lm(pipe.text_encoder), root / "text_encoders" / names["qwen3"], dtype)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)).items()}
    save(vae, root / "vae" / names["vae"], dtype)
    return names
