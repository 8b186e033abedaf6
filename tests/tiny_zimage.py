"""A tiny random-weight Z-Image (ZImagePipeline at toy size) and its parts in the single-file layouts users
keep (ComfyUI's folders), written from the diffusers weights so that loading them back can be compared.

* the diffusion model as the original checkpoint names it (``z_image_turbo_bf16.safetensors``): fused
  ``attention.qkv``, ``attention.out``, ``q_norm`` / ``k_norm``, ``x_embedder`` and ``final_layer`` without
  the patch-size key -- the inverse of diffusers' single-file conversion;
* the Qwen3 text encoder as transformers' causal-LM names it (``qwen_3_4b.safetensors``: ``model.`` + the
  Qwen3Model's own names);
* the VAE in the original (LDM) layout (``ae.safetensors``), as the SD3 writer does it.

The model: a 2-layer S3-DiT (dim 32, two heads of 16 = rope axes 8 + 4 + 4) over 16-channel latents, a
3-layer Qwen3 (width 32, one key/value head) with the real Qwen3 vocabulary the project ships, and a 4-level
VAE: 64x64 images, 8x8 latents, 16 image tokens.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from single_files import save

from nodes.checkpoint import VAE_PREFIX, vae_to_ldm
from nodes.model_store import _own_aligned_memory

ROOT = Path(__file__).resolve().parent.parent
QWEN3_TOKENIZER = ROOT / "models" / "tokenizers" / "qwen3"
SCHEDULER = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}
#: the file names ComfyUI's Z-Image Turbo workflow uses
COMFY_NAMES = {"unet": "z_image_turbo_bf16.safetensors", "qwen3": "qwen_3_4b.safetensors", "vae": "ae.safetensors"}


def build_zimage(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from tiny_families import _vae
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=32, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[1024, 512, 512],
    )
    with torch.no_grad():  # the pad tokens start as zeros; random ones show whether padding is handled alike
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    torch.manual_seed(seed + 1)
    vae = _vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    torch.manual_seed(seed + 2)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=151936, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-6,
        tie_word_embeddings=True))
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae,
                          text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


_SHARED: dict[str, SimpleNamespace] = {}


def shared_zimage(tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny Z-Image per test session: ``folder`` (``tiny-zimage`` inside ``models``, a
    models folder), ``pipe`` (ZImagePipeline loaded back from the folder), ``config`` (its scheduler
    config), ``files`` (its parts as single files in ``models``' ComfyUI folders, under ComfyUI's names)."""
    if "zimage" not in _SHARED:
        from diffusers import ZImagePipeline

        models = tmp_path_factory.mktemp("tiny_zimage")
        folder = models / "tiny-zimage"
        build_zimage().save_pretrained(folder)
        pipe = ZImagePipeline.from_pretrained(str(folder), local_files_only=True).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():  # as the runtime keeps them (aligned CPU memory)
            if isinstance(module, torch.nn.Module):
                _own_aligned_memory(module)
        files = write_zimage_parts(pipe, models)
        _SHARED["zimage"] = SimpleNamespace(folder=folder, models=models, pipe=pipe, files=files,
                                            config=dict(pipe.scheduler.config))
    return _SHARED["zimage"]


def zimage_original(transformer) -> dict[str, torch.Tensor]:
    """A ZImageTransformer2DModel as the original checkpoint (ComfyUI's diffusion_models file) names it."""
    out = {}
    sd = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    for key in list(sd):
        if ".attention.to_q." in key:
            base = key.split(".attention.")[0]
            out[f"{base}.attention.qkv.weight"] = torch.cat(
                [sd.pop(f"{base}.attention.to_{x}.weight") for x in "qkv"])
    for key, value in sd.items():
        new = (key.replace("all_final_layer.2-1.", "final_layer.").replace("all_x_embedder.2-1.", "x_embedder.")
               .replace(".attention.to_out.0.", ".attention.out.").replace(".attention.norm_q.", ".attention.q_norm.")
               .replace(".attention.norm_k.", ".attention.k_norm."))
        out[new] = value
    return out


def qwen3_causal_lm(text_encoder) -> dict[str, torch.Tensor]:
    """A transformers Qwen3Model as Qwen3ForCausalLM names it (tied head left out), as ``qwen_3_4b`` holds it."""
    return {f"model.{k}": v for k, v in text_encoder.state_dict().items()}


def write_zimage_parts(pipe, root: Path, names: dict | None = None, dtype: torch.dtype | None = None) -> dict:
    """Z-Image's parts in ComfyUI's folders under ``root`` (ComfyUI's file names unless ``names``)."""
    names = dict(names or COMFY_NAMES)
    save(zimage_original(pipe.transformer), root / "diffusion_models" / names["unet"], dtype)
    save(qwen3_causal_lm(pipe.text_encoder), root / "text_encoders" / names["qwen3"], dtype)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)).items()}
    save(vae, root / "vae" / names["vae"], dtype)
    return names
