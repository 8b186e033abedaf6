"""Architectures of the tiny-shapes model: Stable Diffusion's, scaled down."""

from __future__ import annotations

from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from schedulers.registry import SD15_SCHEDULER_CONFIG

LATENT_CHANNELS = 4
LATENT_SIZE = 8  # 64x64 pictures, factor 8 like Stable Diffusion
MAX_LENGTH = 77
BOS_ID, EOS_ID = 49406, 49407

# Stable Diffusion 1.5's scheduler configuration (the one the runtime defaults to).
SD15_SCHEDULER = dict(SD15_SCHEDULER_CONFIG)


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=64,
    )


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(64, 96, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def make_text_encoder() -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        projection_dim=64,
    )
    return CLIPTextModel(config)


def make_scheduler() -> PNDMScheduler:
    return PNDMScheduler.from_config(SD15_SCHEDULER)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
