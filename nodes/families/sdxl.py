"""Stable Diffusion XL: a UNet over 4-channel latents conditioned on two CLIPs (ViT-L and OpenCLIP bigG,
penultimate layers concatenated), the bigG pooled projection and the size / crop "time ids"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, LatentFormat, Parts, TextEncoder, read_json, repeat_to
from .clip import run_clip, window_ids

#: ComfyUI's SDXL latent preview factors (rows: channels; columns: R, G, B) and bias
SDXL_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
            (-0.3165, -0.2492, -0.2188))
SDXL_BIAS = (0.1084, -0.0175, -0.0011)


class StableDiffusionXL(Family):
    name = "sdxl"
    label = "Stable Diffusion XL"
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
    encoder_slots = (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2"))
    latent = LatentFormat(4, 8, SDXL_RGB, SDXL_BIAS)
    default_scheduler = {
        "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
    }

    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "UNet2DConditionModel" and config.get("addition_embed_type") == "text_time"

    def network_file_mismatch(self, shapes: Any, config: Any) -> str:
        """A UNet alone in the original layout (``input_blocks`` / ``middle_block`` / ``output_blocks``)."""
        from ..checkpoint import unet_file_mismatch

        return unet_file_mismatch(shapes, config)

    def network_file_source(self, path: Path) -> Any:
        from ..checkpoint import unet_file_source

        return unet_file_source(path)

    def matches_file(self, shapes: Any) -> bool:
        """An all-in-one SDXL checkpoint (original SGM layout): CLIP-G under conditioner.embedders.1."""
        return any(k.startswith("conditioner.embedders.1.model.") for k in shapes)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        """An all-in-one SDXL checkpoint through diffusers' ``from_single_file``, configured by the first
        SDXL folder whose UNet fits the file's shapes."""
        from diffusers import StableDiffusionXLPipeline

        from ..checkpoint import checkpoint_shapes, unet_mismatches
        from . import for_folder

        shapes = checkpoint_shapes(path)
        tried = []
        for folder in config_folders:
            if not (folder / "unet" / "config.json").is_file() or for_folder(folder) is not self:
                continue
            problems = unet_mismatches(shapes, folder / "unet")
            if problems:
                tried.append(f"{folder.name} ({'; '.join(problems)})")
                continue
            try:
                pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(folder), torch_dtype=dtype,
                                                                  local_files_only=True, low_cpu_mem_usage=False)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise NodeError(f"cannot load checkpoint {path.name}: {exc}") from exc
            return Parts(network=pipe.unet, vae=pipe.vae,
                         encoders={"clip_l": TextEncoder(pipe.tokenizer, pipe.text_encoder),
                                   "clip_g": TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2)},
                         scheduler_config=read_json(folder / "scheduler" / "scheduler_config.json"))
        raise NodeError(f"{path.name}: an SDXL checkpoint that no SDXL configuration fits; tried "
                        + (", ".join(tried) or "no SDXL configuration folders (put the model's diffusers folder "
                           "in a models folder)"))

    def encode(self, clip: Any, text: str, ctx: Any = None, **options: Any):
        """As ``StableDiffusionXLPipeline.encode_prompt``: each CLIP's hidden state at ``-2`` (or
        CLIPSetLastLayer's layer), concatenated; pooled = CLIP-G's projection. Options ``width``/``height``,
        ``crop_w``/``crop_h``, ``target_width``/``target_height`` (CLIPTextEncodeSDXL) set the size ids, and
        ``texts`` (slot -> prompt) gives each CLIP its own prompt (the pipeline's ``prompt_2``)."""
        from ..types import Conditioning

        layer = clip.last_layer if clip.last_layer is not None else -2
        hidden, pooled, dropped = [], None, 0
        for slot in ("clip_l", "clip_g"):
            enc = self.encoder(clip, slot)
            ids, mask, cut = window_ids(enc, (options.get("texts") or {}).get(slot, text))
            dropped = max(dropped, cut)
            h, first = run_clip(enc, ids, mask, clip.device, layer)
            hidden.append(h)
            if first.ndim == 2:
                pooled = first
        sizes = {k: options[k] for k in ("width", "height", "crop_w", "crop_h", "target_width",
                                         "target_height") if options.get(k) is not None}
        extra = {"dropped_tokens": dropped}
        if sizes:
            extra["sizes"] = sizes
        return Conditioning(torch.cat(hidden, dim=-1), text, pooled=pooled, extra=extra)

    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        """Text states, and ``added_cond_kwargs``: the pooled embedding and the time ids
        ``(original h, w, crop top, left, target h, w)``, by default the image size with no crop."""
        b, _, h, w = latent_shape
        f = self.latent.spatial_factor
        s = cond.extra.get("sizes", {})
        height, width = s.get("height", h * f), s.get("width", w * f)
        ids = [height, width, s.get("crop_h", 0), s.get("crop_w", 0), s.get("target_height", h * f),
               s.get("target_width", w * f)]
        embeds = repeat_to(cond.embeds, b, what)
        time_ids = torch.tensor([ids], dtype=embeds.dtype, device=embeds.device).repeat(b, 1)
        return {"encoder_hidden_states": embeds,
                "added_cond_kwargs": {"text_embeds": repeat_to(cond.pooled, b, what), "time_ids": time_ids}}
