"""Stable Diffusion 2.x (512 epsilon and 768 v-prediction): SD1.x's pipeline and code, an OpenCLIP-H text
encoder (diffusers' SD2 folders already end it at the penultimate layer) and, for 768-v, a v-prediction
scheduler config, which the model sampling reads.

A single-file SD2.x checkpoint does not say whether it is 768-v or 512 epsilon: the two have the same
shapes. As ComfyUI's model detection does, a ``v_pred`` tensor in the file means v-prediction, else the
spread of one late normalisation bias does (v-trained models have a standard deviation above 0.09 there);
a file without that tensor takes the first configuration that fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, Parts, TextEncoder, read_json
from .sd1 import StableDiffusion1, _is_sd2_unet, _sd2_config

#: OpenCLIP's text tower under the original SD2.x checkpoint layout
OPEN_CLIP_PREFIX = "cond_stage_model.model."
#: the tensor whose spread tells a v-prediction SD2.x UNet (ComfyUI's rule) and the threshold
V_PROBE, V_PROBE_STD = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias", 0.09


class StableDiffusion2(StableDiffusion1):
    name = "sd2"
    label = "Stable Diffusion 2.x"

    #: SD2.1 768-v's scheduler config (ModelSamplingDiscrete eps makes a 512-base model of it)
    default_scheduler = {
        "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    }

    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "UNet2DConditionModel" and config.get("addition_embed_type") is None \
            and _sd2_config(config)

    def matches_folder(self, folder: Path, index: dict) -> bool:
        return Family.matches_folder(self, folder, index) and _is_sd2_unet(folder)

    def matches_file(self, shapes: Any) -> bool:
        """An all-in-one SD2.x checkpoint: a UNet with OpenCLIP's text tower beside it."""
        return any(k.startswith(OPEN_CLIP_PREFIX + "transformer.resblocks.") for k in shapes) and any(
            k.startswith("model.diffusion_model.input_blocks.") for k in shapes)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        """Through diffusers' ``from_single_file`` with the first SD2.x configuration whose UNet fits and
        whose prediction type is the file's (see the module docstring)."""
        from diffusers import StableDiffusionPipeline

        from ..checkpoint import checkpoint_shapes, unet_mismatches
        from . import for_folder

        shapes = checkpoint_shapes(path)
        wanted = _prediction_type(path, shapes)
        fitting, tried = [], []
        for folder in config_folders:
            try:
                if not (folder / "unet" / "config.json").is_file() or for_folder(folder) is not self:
                    continue
            except NodeError:
                continue
            problems = unet_mismatches(shapes, folder / "unet")
            if problems:
                tried.append(f"{folder.name} ({'; '.join(problems)})")
                continue
            fitting.append(folder)
        if not fitting:
            raise NodeError(f"{path.name}: an SD2.x checkpoint that no SD2.x configuration fits; tried "
                            + (", ".join(tried) or "no SD2.x configuration folders"))
        folder = next((f for f in fitting if wanted is None or _folder_prediction(f) == wanted), fitting[0])
        try:
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), config=str(folder), local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise NodeError(f"cannot load checkpoint {path.name}: {exc}") from exc
        scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
        if wanted is not None:
            scheduler["prediction_type"] = wanted
        return Parts(network=pipe.unet, encoders={"clip_l": TextEncoder(pipe.tokenizer, pipe.text_encoder)},
                     vae=pipe.vae, scheduler_config=scheduler)


def _folder_prediction(folder: Path) -> str:
    return read_json(folder / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon")


def _prediction_type(path: Path, shapes: Any) -> str | None:
    """v_prediction or epsilon as the file's tensors tell (None when they do not)."""
    if "v_pred" in shapes:
        return "v_prediction"
    if V_PROBE not in shapes:
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        bias = f.get_tensor(V_PROBE).float()
    return "v_prediction" if bias.std(unbiased=False).item() > V_PROBE_STD else "epsilon"
