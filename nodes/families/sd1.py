"""Stable Diffusion 1.x: a UNet over 4-channel latents, one CLIP-L text encoder (its final output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Family, LatentFormat, Parts, TextEncoder
from .clip import chunk_ids, run_clip, window_ids

#: a least-squares fit of SD1.x latents to their decoded colours (rows: channels; columns: R, G, B)
SD1_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
           (-0.2120, -0.2616, -0.4887))


class StableDiffusion1(Family):
    name = "sd1"
    label = "Stable Diffusion 1.x"
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")
    encoder_slots = (("clip_l", "tokenizer", "text_encoder"),)
    latent = LatentFormat(4, 8, SD1_RGB)

    @property
    def default_scheduler(self) -> dict:
        from schedulers.registry import SD15_SCHEDULER_CONFIG

        return dict(SD15_SCHEDULER_CONFIG)

    def matches_network_config(self, config: Any) -> bool:
        return (config.get("_class_name") == "UNet2DConditionModel" and config.get("addition_embed_type") is None
                and not _sd2_config(config))

    def matches_folder(self, folder: Path, index: dict) -> bool:
        return super().matches_folder(folder, index) and not _is_sd2_unet(folder)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        """An all-in-one SD1.x checkpoint (original layout), configured by the first fitting folder."""
        from ..model_store import load_original_checkpoint, pick_config_folder

        config_folder = pick_config_folder(path, config_folders)
        pipe = load_original_checkpoint(path, config_folder, dtype)
        from .base import read_json

        return Parts(network=pipe.unet, encoders={"clip_l": TextEncoder(pipe.tokenizer, pipe.text_encoder)},
                     vae=pipe.vae,
                     scheduler_config=read_json(config_folder / "scheduler" / "scheduler_config.json"))

    def encode(self, clip: Any, text: str, ctx: Any = None, long_prompt: str = "truncate", **options: Any):
        """As ``StableDiffusionPipeline.encode_prompt`` (with ``clip_skip`` = ``-last_layer - 1`` where
        CLIPSetLastLayer chose a layer); ``long_prompt="chunk"`` encodes 75-token windows (ComfyUI's way)."""
        from ..types import Conditioning

        enc = self.encoder(clip, "clip_l")
        layer = clip.last_layer if clip.last_layer not in (None, -1) else None
        if long_prompt == "chunk":
            ids, mask = chunk_ids(enc, text)
            hidden, _ = run_clip(enc, ids, mask, clip.device, layer, final_norm=True)
            embeds = hidden.reshape(1, -1, hidden.shape[-1])
            return Conditioning(embeds, text, extra={"windows": ids.shape[0]})
        ids, mask, dropped = window_ids(enc, text)
        hidden, _ = run_clip(enc, ids, mask, clip.device, layer, final_norm=True)
        if dropped and ctx is not None:
            ctx.warn(f"the prompt is {dropped} tokens longer than the text encoder's window of "
                     f"{enc.tokenizer.model_max_length} tokens; those {dropped} tokens were dropped "
                     "(set long_prompt to chunk to keep them)")
        return Conditioning(hidden, text, extra={"dropped_tokens": dropped})


def _is_sd2_unet(folder: Path) -> bool:
    """SD2.x UNets attend to 1024-wide OpenCLIP states with linear projections (SD1.x: 768, convolutions)."""
    from .base import read_json

    path = folder / "unet" / "config.json"
    if not path.is_file():
        return False
    return _sd2_config(read_json(path))


def _sd2_config(cfg: dict) -> bool:
    return bool(cfg.get("use_linear_projection")) or cfg.get("cross_attention_dim") == 1024

