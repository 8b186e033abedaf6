"""Writers of the single-file layouts users keep (ComfyUI's folders), from a diffusers pipeline's weights, so
tests can load them back: the inverse of diffusers' single-file conversions.

* :func:`sd3_original` -- an SD3Transformer2DModel as the original MMDiT checkpoint names it
  (``joint_blocks.N.x_block.attn.qkv``, ``final_layer``, ...), what ``diffusion_models/sd3*.safetensors`` holds;
* text encoders as transformers names them (``clip_l.safetensors``, ``t5xxl_fp16.safetensors``): the model's
  own state dict;
* a VAE in the original (LDM) layout: ``nodes.checkpoint.vae_to_ldm``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from nodes.checkpoint import VAE_PREFIX, vae_to_ldm


def _swap(t: torch.Tensor) -> torch.Tensor:
    """(shift, scale) <-> (scale, shift): the original and diffusers' orders of an AdaLN projection."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a])


def sd3_original(transformer) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    n = transformer.config.num_layers
    out = {
        "pos_embed": sd.pop("pos_embed.pos_embed"),
        "x_embedder.proj.weight": sd.pop("pos_embed.proj.weight"),
        "x_embedder.proj.bias": sd.pop("pos_embed.proj.bias"),
        "context_embedder.weight": sd.pop("context_embedder.weight"),
        "context_embedder.bias": sd.pop("context_embedder.bias"),
        "final_layer.linear.weight": sd.pop("proj_out.weight"),
        "final_layer.linear.bias": sd.pop("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight": _swap(sd.pop("norm_out.linear.weight")),
        "final_layer.adaLN_modulation.1.bias": _swap(sd.pop("norm_out.linear.bias")),
    }
    for new, old in (("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
                     ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
                     ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
                     ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")):
        for leaf in ("weight", "bias"):
            out[f"{new}.{leaf}"] = sd.pop(f"{old}.{leaf}")
    for i in range(n):
        b, j = f"transformer_blocks.{i}", f"joint_blocks.{i}"
        last = i == n - 1
        for leaf in ("weight", "bias"):
            out[f"{j}.x_block.attn.qkv.{leaf}"] = torch.cat([sd.pop(f"{b}.attn.to_{x}.{leaf}") for x in "qkv"])
            out[f"{j}.context_block.attn.qkv.{leaf}"] = torch.cat(
                [sd.pop(f"{b}.attn.add_{x}_proj.{leaf}") for x in "qkv"])
            out[f"{j}.x_block.attn.proj.{leaf}"] = sd.pop(f"{b}.attn.to_out.0.{leaf}")
            out[f"{j}.x_block.adaLN_modulation.1.{leaf}"] = sd.pop(f"{b}.norm1.linear.{leaf}")
            ctx = sd.pop(f"{b}.norm1_context.linear.{leaf}")
            out[f"{j}.context_block.adaLN_modulation.1.{leaf}"] = _swap(ctx) if last else ctx
            out[f"{j}.x_block.mlp.fc1.{leaf}"] = sd.pop(f"{b}.ff.net.0.proj.{leaf}")
            out[f"{j}.x_block.mlp.fc2.{leaf}"] = sd.pop(f"{b}.ff.net.2.{leaf}")
            if f"{b}.attn2.to_q.{leaf}" in sd:  # SD3.5 medium's dual-attention blocks
                out[f"{j}.x_block.attn2.qkv.{leaf}"] = torch.cat([sd.pop(f"{b}.attn2.to_{x}.{leaf}") for x in "qkv"])
                out[f"{j}.x_block.attn2.proj.{leaf}"] = sd.pop(f"{b}.attn2.to_out.0.{leaf}")
            if not last:
                out[f"{j}.context_block.attn.proj.{leaf}"] = sd.pop(f"{b}.attn.to_add_out.{leaf}")
                out[f"{j}.context_block.mlp.fc1.{leaf}"] = sd.pop(f"{b}.ff_context.net.0.proj.{leaf}")
                out[f"{j}.context_block.mlp.fc2.{leaf}"] = sd.pop(f"{b}.ff_context.net.2.{leaf}")
        for ours, theirs in (("attn.norm_q", "x_block.attn.ln_q"), ("attn.norm_k", "x_block.attn.ln_k"),
                             ("attn.norm_added_q", "context_block.attn.ln_q"),
                             ("attn.norm_added_k", "context_block.attn.ln_k"),
                             ("attn2.norm_q", "x_block.attn2.ln_q"), ("attn2.norm_k", "x_block.attn2.ln_k")):
            if f"{b}.{ours}.weight" in sd:  # QK norm (SD3.5)
                out[f"{j}.{theirs}.weight"] = sd.pop(f"{b}.{ours}.weight")
    if sd:
        raise ValueError(f"no original name for {sorted(sd)[:5]}")
    return out


def save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state.items()}, str(path))
    return path


def write_sd3_parts(pipe, root: Path, prefix: str = "tiny-sd3", dtype: torch.dtype | None = None) -> dict:
    """SD3's parts in ComfyUI's folders under ``root``; returns the file names by part."""
    names = {
        "unet": f"{prefix}-mmdit.safetensors", "clip_l": f"{prefix}-clip_l.safetensors",
        "clip_g": f"{prefix}-clip_g.safetensors", "t5": f"{prefix}-t5xxl.safetensors",
        "vae": f"{prefix}-vae.safetensors",
    }
    save(sd3_original(pipe.transformer), root / "diffusion_models" / names["unet"], dtype)
    save(pipe.text_encoder.state_dict(), root / "text_encoders" / names["clip_l"], dtype)
    save(pipe.text_encoder_2.state_dict(), root / "text_encoders" / names["clip_g"], dtype)
    t5 = {k: v for k, v in pipe.text_encoder_3.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied
    save(t5, root / "text_encoders" / names["t5"], dtype)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)).items()}
    save(vae, root / "vae" / names["vae"], dtype)
    return names


def _clip_key(key: str) -> str:
    """transformers' CLIP names, nested form (the flattened CLIPTextModel of newer transformers drops
    ``text_model.``)."""
    return key if key.startswith(("text_model.", "text_projection")) else "text_model." + key


def open_clip_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModelWithProjection as OpenCLIP names it (SDXL's CLIP-G in checkpoints):
    fused ``in_proj`` attention, ``resblocks``, ``ln_final`` and a transposed ``text_projection``."""
    sd = {_clip_key(k): v for k, v in state.items() if not k.endswith("position_ids")}
    out = {
        "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
        "token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
        "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": sd.pop("text_model.final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        a, b = f"text_model.encoder.layers.{i}", f"transformer.resblocks.{i}"
        for leaf in ("weight", "bias"):
            out[f"{b}.attn.in_proj_{leaf}"] = torch.cat([sd.pop(f"{a}.self_attn.{x}_proj.{leaf}") for x in "qkv"])
            out[f"{b}.attn.out_proj.{leaf}"] = sd.pop(f"{a}.self_attn.out_proj.{leaf}")
            out[f"{b}.ln_1.{leaf}"] = sd.pop(f"{a}.layer_norm1.{leaf}")
            out[f"{b}.ln_2.{leaf}"] = sd.pop(f"{a}.layer_norm2.{leaf}")
            out[f"{b}.mlp.c_fc.{leaf}"] = sd.pop(f"{a}.mlp.fc1.{leaf}")
            out[f"{b}.mlp.c_proj.{leaf}"] = sd.pop(f"{a}.mlp.fc2.{leaf}")
    if sd:
        raise ValueError(f"no OpenCLIP name for {sorted(sd)[:5]}")
    return out


def sdxl_checkpoint(pipe) -> dict[str, torch.Tensor]:
    """An SDXL pipeline as one all-in-one checkpoint in the original (SGM) layout, as checkpoints/ holds
    SDXL models: ``model.diffusion_model.``, ``first_stage_model.``, CLIP-L under
    ``conditioner.embedders.0.transformer.`` and CLIP-G (OpenCLIP names) under ``conditioner.embedders.1.model.``."""
    from nodes.checkpoint import unet_to_ldm

    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update({"conditioner.embedders.0.transformer." + _clip_key(k): v
                  for k, v in pipe.text_encoder.state_dict().items() if not k.endswith("position_ids")})
    state.update({"conditioner.embedders.1.model." + k: v
                  for k, v in open_clip_layout(pipe.text_encoder_2.state_dict()).items()})
    return state


def sd3_checkpoint(pipe, with_t5: bool = True) -> dict[str, torch.Tensor]:
    """An SD3 pipeline as one all-in-one checkpoint, as checkpoints/ holds SD3.5: the MMDiT under
    ``model.diffusion_model.``, the VAE under ``first_stage_model.``, the text encoders (transformers' names)
    under ``text_encoders.clip_l|clip_g|t5xxl.transformer.``. CLIP-L has no projection there (the
    pipeline's pooled CLIP-L output is its unprojected one), so ``pipe.text_encoder``'s projection should be
    the identity for the file and the folder to agree."""
    state = {"model.diffusion_model." + k: v for k, v in sd3_original(pipe.transformer).items()}
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update({"text_encoders.clip_l.transformer." + _clip_key(k): v
                  for k, v in pipe.text_encoder.state_dict().items()
                  if not k.endswith("position_ids") and not k.startswith("text_projection")})
    state.update({"text_encoders.clip_g.transformer." + _clip_key(k): v
                  for k, v in pipe.text_encoder_2.state_dict().items() if not k.endswith("position_ids")})
    if with_t5:
        state.update({"text_encoders.t5xxl.transformer." + k: v for k, v in pipe.text_encoder_3.state_dict().items()
                      if k != "encoder.embed_tokens.weight"})  # tied to shared.weight
    return state


def sd2_checkpoint(pipe) -> dict[str, torch.Tensor]:
    """An SD2.x pipeline as one all-in-one checkpoint in the original layout: UNet and VAE as SD1.x's, the
    OpenCLIP text tower under ``cond_stage_model.model.`` (its projection, unused by the pipeline, the
    identity)."""
    from nodes.checkpoint import unet_to_ldm

    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    clip = dict(pipe.text_encoder.state_dict())
    hidden = pipe.text_encoder.config.hidden_size
    clip["text_projection.weight"] = torch.eye(hidden)
    state.update({"cond_stage_model.model." + k: v for k, v in open_clip_layout(clip).items()})
    return state
