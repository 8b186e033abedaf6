"""Stable Diffusion 2.x (512 epsilon and 768 v-prediction): SD1.x's pipeline and code, an OpenCLIP-H text
encoder (diffusers' SD2 folders already end it at the penultimate layer) and, for 768-v, a v-prediction
scheduler config, which the model sampling reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, Parts
from .sd1 import StableDiffusion1, _is_sd2_unet


class StableDiffusion2(StableDiffusion1):
    name = "sd2"
    label = "Stable Diffusion 2.x"

    def matches_folder(self, folder: Path, index: dict) -> bool:
        return Family.matches_folder(self, folder, index) and _is_sd2_unet(folder)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        raise NodeError(f"{path.name}: single-file Stable Diffusion 2.x checkpoints are not loaded yet; "
                        "use the model's diffusers folder")
