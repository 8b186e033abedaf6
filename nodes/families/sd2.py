"""Stable Diffusion 2.x (512 epsilon and 768 v-prediction): SD1.x's pipeline and code, an OpenCLIP-H text
encoder (diffusers' SD2 folders already end it at the penultimate layer) and, for 768-v, a v-prediction
scheduler config, which the model sampling reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Family, Parts
from .sd1 import StableDiffusion1, _is_sd2_unet, _sd2_config


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

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        return Family.load_file(self, path, dtype, config_folders)
