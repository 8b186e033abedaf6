"""Tiny random-weight pipelines of each family, built from small configs (as diffusers' own pipeline tests
build theirs): SD1.x, SD2.x 768-v (v-prediction), SDXL, SD3, Z-Image and Qwen-Image.

Each is a real pipeline of its family (StableDiffusionPipeline, StableDiffusionXLPipeline,
StableDiffusion3Pipeline) at toy sizes: 64x64 images, 8x8 latents (a factor-8 VAE, as the families' latent
formats say), CLIPs with a character-level vocabulary and, for SD3, T5 with the real T5 vocabulary the project
ships. Seconds to build on a CPU.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
T5_TOKENIZER = ROOT / "models" / "tokenizers" / "t5"
QWEN3_TOKENIZER = ROOT / "models" / "tokenizers" / "qwen3"
#: Z-Image's scheduler config (the released models')
Z_IMAGE_SCHEDULER = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}
IMAGE_SIZE = 64
CLIP_DIM = 32
#: SDXL's CLIP-G is wider than its CLIP-L (1280 and 768), which is how single-file loaders tell them apart
CLIP_G_DIM = 48

SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}


def write_tokenizer_files(folder: Path) -> Path:
    """A character-level CLIP BPE vocabulary (no merges) in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in string.ascii_lowercase + string.digits + ".,!?'-":
        tokens += [ch, ch + "</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def tiny_vae(latent_channels: int = 4, attention: bool = True, channels: tuple[int, ...] = (8, 8, 16, 16),
             **config):
    """A 4-level VAE (factor 8: 64x64 images <-> 8x8 latents). Without ``attention`` (no mid-block
    attention, which grows with the square of the latent's area) and with fewer ``channels`` it decodes
    1024x1024 images quickly."""
    from diffusers import AutoencoderKL

    if not attention:
        config["mid_block_add_attention"] = False
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels, layers_per_block=1, norm_num_groups=channels[0], sample_size=IMAGE_SIZE,
        **config,
    )


def clip_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    tok_dir = write_tokenizer_files(Path(workdir) / "clip_tokenizer")
    return CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)


def tiny_clip(tokenizer, with_projection: bool = False, hidden: int = CLIP_DIM, layers: int = 3):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=CLIP_DIM, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _unet(levels: int = 2, **config):
    """A UNet attending to the text at its last level only: with 4 levels that is 1/8 of the latent's side,
    so a 1024x1024 image's attention covers 16x16 positions; its full-size level is 16 channels wide."""
    from diffusers import UNet2DConditionModel

    plain = levels - 1
    channels = (32, 64) if levels == 2 else (16,) + (32,) * (levels - 2) + (64,)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * plain, norm_num_groups=channels[0], **config,
    )


#: what stand-ins build: a deeper, narrower UNet and a narrower VAE without mid-block attention, so that a
#: workflow's own sizes still run in seconds (SDXL at 1024x1024: 0.17 s a step with guidance, 0.5 s to decode,
#: on one CPU thread)
STAND_IN_SIZES = {"levels": 4, "vae_attention": False, "vae_channels": (4, 4, 8, 8)}


def build_sd1(workdir: Path, seed: int = 0, levels: int = 2, vae_attention: bool = True,
              vae_channels: tuple[int, ...] = (8, 8, 16, 16)):
    """SD1.x at toy size: convolution-projection UNet attending to one CLIP, SD1.5's scheduler config."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from schedulers.registry import SD15_SCHEDULER_CONFIG

    torch.manual_seed(seed)
    unet = _unet(levels, cross_attention_dim=CLIP_DIM, attention_head_dim=8)
    torch.manual_seed(seed + 1)
    vae = tiny_vae(attention=vae_attention, channels=vae_channels)
    tokenizer = clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip(tokenizer)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(dict(SD15_SCHEDULER_CONFIG)), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sd2v(workdir: Path, seed: int = 0, levels: int = 2, vae_attention: bool = True,
               vae_channels: tuple[int, ...] = (8, 8, 16, 16)):
    """SD2.x 768-v at toy size: linear-projection UNet, v-prediction DDIM config."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    unet = _unet(levels, cross_attention_dim=CLIP_DIM, attention_head_dim=(2,) * (levels - 1) + (4,),
                 use_linear_projection=True)
    torch.manual_seed(seed + 1)
    vae = tiny_vae(attention=vae_attention, channels=vae_channels)
    tokenizer = clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip(tokenizer)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(SD21_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(workdir: Path, seed: int = 0, levels: int = 2, vae_attention: bool = True,
               vae_channels: tuple[int, ...] = (8, 8, 16, 16)):
    """SDXL base at toy size: two CLIPs (the second with a projection), text-time additional embeddings."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet = _unet(levels, attention_head_dim=(2,) * (levels - 1) + (4,), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 transformer_layers_per_block=(1,) * (levels - 1) + (2,),
                 projection_class_embeddings_input_dim=6 * 8 + CLIP_DIM, cross_attention_dim=CLIP_DIM + CLIP_G_DIM)
    torch.manual_seed(seed + 1)
    vae = tiny_vae(attention=vae_attention, channels=vae_channels)
    tokenizer = clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip(tokenizer)
    torch.manual_seed(seed + 3)
    text_encoder_2 = tiny_clip(tokenizer, with_projection=True, hidden=CLIP_G_DIM)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    )


def build_sd3(workdir: Path, seed: int = 0, with_t5: bool = True, clip_g_dim: int = CLIP_DIM,
              t5_dim: int = 2 * CLIP_DIM, pos_embed_max_size: int = 16, vae_attention: bool = True,
              vae_channels: tuple[int, ...] = (8, 8, 16, 16)):
    """SD3 at toy size: MMDiT over 16-channel latents, CLIP-L + CLIP-G (projections) + T5, shift 3.

    ``t5_dim`` (the MMDiT's joint attention width) must hold both CLIPs' states side by side;
    ``pos_embed_max_size`` bounds the latent's side in patches (16: 256x256 images)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=t5_dim,
        pooled_projection_dim=2 * CLIP_DIM, pos_embed_max_size=pos_embed_max_size,
    )
    torch.manual_seed(seed + 1)
    vae = tiny_vae(16, vae_attention, vae_channels, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                   use_post_quant_conv=False)
    tokenizer = clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip(tokenizer, with_projection=True)
    torch.manual_seed(seed + 3)
    text_encoder_2 = tiny_clip(tokenizer, with_projection=True, hidden=clip_g_dim)
    text_encoder_3 = tokenizer_3 = None
    if with_t5:
        torch.manual_seed(seed + 4)
        text_encoder_3 = T5EncoderModel(T5Config(vocab_size=32128, d_model=t5_dim, d_kv=8, d_ff=64, num_layers=2,
                                                 num_heads=4, decoder_start_token_id=0))
        tokenizer_3 = T5TokenizerFast.from_pretrained(str(T5_TOKENIZER))
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )


def build_sd3_single_file(workdir: Path, seed: int = 0):
    """SD3 as its single files can hold it: CLIP-G wider than CLIP-L (how diffusers' single-file loader tells
    them apart) and CLIP-L's projection the identity (what that loader gives SD3's CLIP-L); positions for
    images up to 2048x2048 (SD3.5's own sizes)."""
    import torch

    pipe = build_sd3(workdir, seed, clip_g_dim=CLIP_G_DIM, t5_dim=3 * CLIP_DIM, pos_embed_max_size=128,
                     vae_attention=False, vae_channels=STAND_IN_SIZES["vae_channels"])
    with torch.no_grad():
        pipe.text_encoder.text_projection.weight.copy_(torch.eye(CLIP_DIM))
    return pipe


def build_z_image(workdir: Path, seed: int = 0, vae_attention: bool = True,
                  vae_channels: tuple[int, ...] = (8, 8, 16, 16)):
    """Z-Image at toy size: a 2-layer S3-DiT (dim 32, two heads of 16 = rope axes 8 + 4 + 4, the real rope
    table lengths) over 16-channel latents, a 3-layer Qwen3 (width 32, one key/value head) with the real Qwen3
    vocabulary the project ships, the Flux VAE's factors. The pad tokens are random (they start as zeros),
    so padding shows if it is handled differently."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=32, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[1024, 512, 512],
    )
    with torch.no_grad():
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    torch.manual_seed(seed + 1)
    vae = tiny_vae(16, vae_attention, vae_channels, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                   use_post_quant_conv=False)
    torch.manual_seed(seed + 2)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=151936, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-6,
        tie_word_embeddings=True))
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**Z_IMAGE_SCHEDULER), vae=vae,
                          text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def build_qwen_image(workdir: Path, seed: int = 0):
    """Qwen-Image at toy size: a 2-layer MMDiT over 16-channel latents in 2x2 patches (in_channels 64), a
    2-layer Qwen2.5-VL (width 32, a 2-block vision tower the text path does not use) with the Qwen vocabulary
    the project ships, and a 4-level causal 3-D VAE (factor 8; two residual blocks per level, as the real one,
    whose file layout depends on it) with per-channel latent mean and std."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=torch.linspace(-0.5, 0.5, 16).tolist(),
                                 latents_std=torch.linspace(1.0, 2.5, 16).tolist())
    torch.manual_seed(seed + 2)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config={"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default",
                                                                "type": "default"},
                     "rope_theta": 1000000.0, "vocab_size": 152064},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 32},
        hidden_size=32, vocab_size=152064, vision_end_token_id=151653, vision_start_token_id=151652,
        vision_token_id=151654)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, transformer=transformer)
