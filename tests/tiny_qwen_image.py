"""A tiny random-weight Qwen-Image (QwenImagePipeline at toy size), saved as a diffusers folder: a 2-layer
MMDiT over 16-channel latents in 2x2 patches (in_channels 64), a 2-layer Qwen2.5-VL (width 32, a 2-block
vision tower the text path does not use) with the Qwen vocabulary the project ships, and a 4-level causal
3-D VAE (factor 8; two residual blocks per level, as the real one, whose file layout depends on it): 64x64
images, 8x8 latents, 16 image tokens.

:func:`wan_vae_layout` writes the VAE as ComfyUI's ``qwen_image_vae.safetensors`` holds it (Wan 2.1's
original names): the inverse of diffusers' Wan VAE conversion."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from nodes.model_store import _own_aligned_memory

ROOT = Path(__file__).resolve().parent.parent
QWEN_TOKENIZER = ROOT / "models" / "tokenizers" / "qwen3"


def build_qwen_image(seed: int = 0):
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
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, transformer=transformer)


_SHARED: dict[str, SimpleNamespace] = {}


def shared_qwen_image(tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny Qwen-Image per test session: ``folder`` (``tiny-qwen-image`` in
    ``models``), ``pipe`` (loaded back from the folder), ``config`` (its scheduler config)."""
    if "qwen_image" not in _SHARED:
        from diffusers import QwenImagePipeline

        models = tmp_path_factory.mktemp("tiny_qwen_image")
        folder = models / "tiny-qwen-image"
        build_qwen_image().save_pretrained(folder)
        pipe = QwenImagePipeline.from_pretrained(str(folder), local_files_only=True).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                _own_aligned_memory(module)
        _SHARED["qwen_image"] = SimpleNamespace(folder=folder, models=models, pipe=pipe,
                                                config=dict(pipe.scheduler.config))
    return _SHARED["qwen_image"]


_RESNET = (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
           ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))


def _resnet(leaf: str) -> str:
    for new, old in _RESNET:
        if leaf.startswith(new):
            return old + leaf[len(new):]
    return leaf


def wan_vae_layout(state: dict) -> dict:
    """An AutoencoderKLQwenImage state dict under Wan 2.1's original names."""
    out = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        new = key
        if part in ("quant_conv", "post_quant_conv"):
            new = ("conv1." if part == "quant_conv" else "conv2.") + rest
        elif rest.startswith("conv_in."):
            new = f"{part}.conv1.{rest[len('conv_in.'):]}"
        elif rest.startswith("norm_out."):
            new = f"{part}.head.0.{rest[len('norm_out.'):]}"
        elif rest.startswith("conv_out."):
            new = f"{part}.head.2.{rest[len('conv_out.'):]}"
        elif rest.startswith("mid_block."):
            kind, idx, leaf = rest[len("mid_block."):].split(".", 2)
            new = (f"{part}.middle.1.{leaf}" if kind == "attentions"
                   else f"{part}.middle.{2 * int(idx)}.{_resnet(leaf)}")
        elif rest.startswith("down_blocks."):
            idx, leaf = rest[len("down_blocks."):].split(".", 1)
            new = f"{part}.downsamples.{idx}.{_resnet(leaf)}"
        elif rest.startswith("up_blocks."):
            block, kind, idx, leaf = rest[len("up_blocks."):].split(".", 3)
            number = 4 * int(block) + (3 if kind == "upsamplers" else int(idx))
            new = f"{part}.upsamples.{number}.{_resnet(leaf) if kind == 'resnets' else leaf}"
        out[new] = value.detach().clone()
    return out
