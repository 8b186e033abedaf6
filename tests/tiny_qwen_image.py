"""A tiny random-weight Qwen-Image (QwenImagePipeline at toy size), saved as a diffusers folder: a 2-layer
MMDiT over 16-channel latents in 2x2 patches (in_channels 64), a 2-layer Qwen2.5-VL (width 32, a 2-block
vision tower the text path does not use) with the Qwen vocabulary the project ships, and a 4-level causal
3-D VAE (factor 8; two residual blocks per level, as the real one, whose file layout depends on it): 64x64
images, 8x8 latents, 16 image tokens.

The builder is the stand-ins' (nodes.stand_ins.tiny), as are the single-file writers the tests use
(nodes.stand_ins.layouts: ``wan_vae_layout`` for ComfyUI's ``qwen_image_vae.safetensors``)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from nodes.model_store import _own_aligned_memory
from nodes.stand_ins.tiny import build_qwen_image

_SHARED: dict[str, SimpleNamespace] = {}


def shared_qwen_image(tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny Qwen-Image per test session: ``folder`` (``tiny-qwen-image`` in
    ``models``), ``pipe`` (loaded back from the folder), ``config`` (its scheduler config)."""
    if "qwen_image" not in _SHARED:
        from diffusers import QwenImagePipeline

        models = tmp_path_factory.mktemp("tiny_qwen_image")
        folder = models / "tiny-qwen-image"
        build_qwen_image(models).save_pretrained(folder)
        pipe = QwenImagePipeline.from_pretrained(str(folder), local_files_only=True).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                _own_aligned_memory(module)
        _SHARED["qwen_image"] = SimpleNamespace(folder=folder, models=models, pipe=pipe,
                                                config=dict(pipe.scheduler.config))
    return _SHARED["qwen_image"]
