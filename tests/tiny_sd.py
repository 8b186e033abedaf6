"""A tiny random-weight Stable Diffusion 1.x model for tests (seconds on a CPU, no downloads).

Same architecture family and scheduler config as SD 1.5, with toy sizes: UNet channels (32, 64), 32-dim
cross attention, a 2-layer CLIP text encoder, a 2-level VAE (16x16 images <-> 4x8x8 latents) and a
character-level CLIP tokenizer written to disk.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

from nodes.stand_ins.tiny import write_tokenizer_files
from schedulers import registry as _registry

#: Stable Diffusion 1.5's scheduler_config.json
SD15_SCHEDULER_CONFIG = dict(_registry.SD15_SCHEDULER_CONFIG)

IMAGE_SIZE = 16
LATENT_SHAPE = (4, 8, 8)
EMBED_DIM = 32


def build_tiny_sd(workdir: Path, seed: int = 0):
    """Build the components with fixed seeds and return a StableDiffusionPipeline (float32, CPU)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SHAPE[1],
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
    )
    tok_dir = write_tokenizer_files(Path(workdir) / "tokenizer_src")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=EMBED_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)


def save_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model in diffusers' folder layout (model_index.json, unet/, vae/, ...)."""
    pipe = build_tiny_sd(Path(folder).parent / (Path(folder).name + "_src"), seed)
    pipe.save_pretrained(folder)
    return Path(folder)


def load_tiny_sd(folder: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        folder,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


_SHARED: dict[str, SimpleNamespace] = {}


def shared_tiny_sd(tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny model per test session: ``pipe``, its ``folder``, ``config`` (the
    pipeline's original scheduler config; tests may swap ``pipe.scheduler``), and ``positive`` / ``negative``
    prompt embeddings made by its own text encoder. Pass pytest's ``tmp_path_factory``."""
    if "model" not in _SHARED:
        folder = save_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "model")
        pipe = load_tiny_sd(folder)
        with torch.no_grad():
            positive, negative = pipe.encode_prompt(
                "a photo of a cat", "cpu", 1, True, negative_prompt="blurry"
            )
        _SHARED["model"] = SimpleNamespace(
            pipe=pipe, folder=folder, config=dict(pipe.scheduler.config), positive=positive, negative=negative
        )
    return _SHARED["model"]


@contextmanager
def single_thread():
    """Run torch on one intra-op thread: with tiny tensors on a shared, busy machine this is several times
    faster than competing for cores (and it keeps timings stable)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
