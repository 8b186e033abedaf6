"""Tiny random-weight models of every family beyond SD1.x, built from small configs (as diffusers' own
pipeline tests build theirs) and saved as diffusers folders: SD2.x 768-v (v-prediction), SDXL and SD3.

Each is a real pipeline of its family (StableDiffusionPipeline, StableDiffusionXLPipeline,
StableDiffusion3Pipeline) at toy sizes: 64x64 images, 8x8 latents, CLIPs with a character-level vocabulary
and, for SD3, T5 with the real T5 vocabulary the project ships. Seconds to build on a CPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from tiny_sd import write_tokenizer_files

from nodes.model_store import _own_aligned_memory

ROOT = Path(__file__).resolve().parent.parent
T5_TOKENIZER = ROOT / "models" / "tokenizers" / "t5"
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


def _vae(latent_channels: int = 4, **config):
    """A 4-level VAE (factor 8: 64x64 images <-> 8x8 latents)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels, layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE, **config,
    )


def _clip_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    tok_dir = write_tokenizer_files(workdir / "clip_tokenizer")
    return CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)


def _clip(tokenizer, with_projection: bool = False, hidden: int = CLIP_DIM, layers: int = 3):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=CLIP_DIM, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_sd2v(workdir: Path, seed: int = 0):
    """SD2.x 768-v at toy size: linear-projection UNet, v-prediction DDIM config."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CLIP_DIM, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = _vae()
    tokenizer = _clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = _clip(tokenizer)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(SD21_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(workdir: Path, seed: int = 0):
    """SDXL base at toy size: two CLIPs (the second with a projection), text-time additional embeddings."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + CLIP_DIM, cross_attention_dim=CLIP_DIM + CLIP_G_DIM,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = _vae()
    tokenizer = _clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = _clip(tokenizer)
    torch.manual_seed(seed + 3)
    text_encoder_2 = _clip(tokenizer, with_projection=True, hidden=CLIP_G_DIM)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    )


def build_sd3(workdir: Path, seed: int = 0, with_t5: bool = True, clip_g_dim: int = CLIP_DIM):
    """SD3 at toy size: MMDiT over 16-channel latents, CLIP-L + CLIP-G (projections) + T5, shift 3.
    ``clip_g_dim`` wider than CLIP-L's is how single-file loaders tell the two apart (1280 and 768)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    t5_dim = CLIP_DIM + max(CLIP_DIM, clip_g_dim)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=t5_dim,
        pooled_projection_dim=2 * CLIP_DIM, pos_embed_max_size=16,
    )
    torch.manual_seed(seed + 1)
    vae = _vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    tokenizer = _clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = _clip(tokenizer, with_projection=True)
    torch.manual_seed(seed + 3)
    text_encoder_2 = _clip(tokenizer, with_projection=True, hidden=clip_g_dim)
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


BUILDERS = {"sd2v": build_sd2v, "sdxl": build_sdxl, "sd3": build_sd3,
            "sd3-no-t5": lambda workdir: build_sd3(workdir, with_t5=False)}
_SHARED: dict[str, SimpleNamespace] = {}


def shared_family(name: str, tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny model of family ``name`` per test session: ``folder`` (inside ``models``,
    a models folder to give the runtime), ``pipe`` (the diffusers pipeline loaded back from the folder),
    ``config`` (its original scheduler config; tests may swap ``pipe.scheduler``)."""
    if name not in _SHARED:
        from diffusers import DiffusionPipeline

        models = tmp_path_factory.mktemp(f"tiny_{name}")
        pipe = BUILDERS[name](models.parent / f"{models.name}_src")
        folder = models / f"tiny-{name}"
        pipe.save_pretrained(folder)
        absent = {"text_encoder_3": None, "tokenizer_3": None} if name == "sd3-no-t5" else {}
        pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True, **absent).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():  # as the runtime keeps them: CPU kernels pick their
            if isinstance(module, torch.nn.Module):  # vectorised path by alignment, which shows in the last bits
                _own_aligned_memory(module)
        _SHARED[name] = SimpleNamespace(folder=folder, models=models, pipe=pipe, config=dict(pipe.scheduler.config))
    return _SHARED[name]


@contextmanager
def executor_over(models_folders, workdir: Path, services):
    """An executor whose models folders (GRAPH_RUNTIME_MODELS, as a user sets them) are ``models_folders``,
    on one torch thread (see tiny_sd.single_thread)."""
    import pytest
    from nodes_support import make_executor
    from tiny_sd import single_thread

    with pytest.MonkeyPatch.context() as mp, single_thread():
        mp.setenv("GRAPH_RUNTIME_MODELS", os.pathsep.join(str(m) for m in models_folders))
        yield make_executor(workdir, services=services)
