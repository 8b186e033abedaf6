"""A diffusers pipeline's weights in the single-file layouts users keep: the inverse of the single-file
conversions our loaders (and diffusers' ``from_single_file``) read.

* all-in-one checkpoints -- SD1.x (LDM names: ``model.diffusion_model.``, ``first_stage_model.``,
  ``cond_stage_model.transformer.``), SDXL (SGM names: CLIP-L under ``conditioner.embedders.0.transformer.``,
  CLIP-G with OpenCLIP names under ``conditioner.embedders.1.model.``) and SD3 as ComfyUI saves it (the MMDiT
  under ``model.diffusion_model.``, the text encoders under ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.``);
* :func:`sd3_original` -- an SD3Transformer2DModel as the original MMDiT checkpoint names it
  (``joint_blocks.N.x_block.attn.qkv``, ``final_layer``, ...), what ``diffusion_models/sd3*.safetensors`` holds;
* :func:`z_image_original` -- a ZImageTransformer2DModel as ComfyUI's ``z_image_turbo_bf16.safetensors`` names it;
* text encoders as transformers names them (``clip_l.safetensors``, ``t5xxl_fp16.safetensors``; Qwen3 as
  Qwen3ForCausalLM names it, :func:`qwen3_causal_lm`);
* a VAE in the original (LDM) layout; Qwen-Image's 3-D VAE in Wan 2.1's (:func:`wan_vae_layout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

State = dict  # parameter name -> tensor


def _swap(t: torch.Tensor) -> torch.Tensor:
    """(shift, scale) <-> (scale, shift): the original and diffusers' orders of an AdaLN projection."""
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a])


def sd3_original(transformer) -> State:
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
    import torch

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
            if not last:
                out[f"{j}.context_block.attn.proj.{leaf}"] = sd.pop(f"{b}.attn.to_add_out.{leaf}")
                out[f"{j}.context_block.mlp.fc1.{leaf}"] = sd.pop(f"{b}.ff_context.net.0.proj.{leaf}")
                out[f"{j}.context_block.mlp.fc2.{leaf}"] = sd.pop(f"{b}.ff_context.net.2.{leaf}")
    if sd:
        raise ValueError(f"no original name for {sorted(sd)[:5]}")
    return out


def save(state: State, path: Path, dtype: torch.dtype | None = None, metadata: dict | None = None) -> Path:
    """``state`` as a .safetensors file (floating tensors in ``dtype`` when given)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state.items()}, str(path), metadata=metadata)
    return path


def text_encoder_state(model) -> State:
    """A transformers text encoder as text_encoders/ files hold it: transformers' names, CLIPs in their nested
    form (``text_model.``), T5 without its tied input embedding (the files keep only ``shared``)."""
    state = model.state_dict().items()
    if model.config.model_type == "t5":
        return {k: v for k, v in state if k != "encoder.embed_tokens.weight"}
    return {_clip_key(k): v for k, v in state if not k.endswith("position_ids")}


def vae_state(vae) -> State:
    """An AutoencoderKL in the original (LDM) layout, as vae/ files hold it (no ``first_stage_model.``)."""
    from nodes.checkpoint import VAE_PREFIX, vae_to_ldm

    return {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(vae.state_dict(), dict(vae.config)).items()}


def write_sd3_parts(pipe, root: Path, prefix: str = "tiny-sd3", dtype: torch.dtype | None = None) -> dict:
    """SD3's parts in ComfyUI's folders under ``root``; returns the file names by part."""
    names = {
        "unet": f"{prefix}-mmdit.safetensors", "clip_l": f"{prefix}-clip_l.safetensors",
        "clip_g": f"{prefix}-clip_g.safetensors", "t5": f"{prefix}-t5xxl.safetensors",
        "vae": f"{prefix}-vae.safetensors",
    }
    save(sd3_original(pipe.transformer), root / "diffusion_models" / names["unet"], dtype)
    save(text_encoder_state(pipe.text_encoder), root / "text_encoders" / names["clip_l"], dtype)
    save(text_encoder_state(pipe.text_encoder_2), root / "text_encoders" / names["clip_g"], dtype)
    save(text_encoder_state(pipe.text_encoder_3), root / "text_encoders" / names["t5"], dtype)
    save(vae_state(pipe.vae), root / "vae" / names["vae"], dtype)
    return names


def _clip_key(key: str) -> str:
    """transformers' CLIP names, nested form (the flattened CLIPTextModel of newer transformers drops
    ``text_model.``)."""
    return key if key.startswith(("text_model.", "text_projection")) else "text_model." + key


def open_clip_layout(state: State) -> State:
    """A transformers CLIPTextModelWithProjection as OpenCLIP names it (SDXL's CLIP-G in checkpoints):
    fused ``in_proj`` attention, ``resblocks``, ``ln_final`` and a transposed ``text_projection``."""
    import torch

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


def sd1_checkpoint(pipe) -> State:
    """An SD1.x pipeline as one all-in-one checkpoint in the original (LDM) layout."""
    from nodes.checkpoint import clip_to_ldm, unet_to_ldm, vae_to_ldm

    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update(clip_to_ldm(pipe.text_encoder.state_dict()))
    return state


def sdxl_checkpoint(pipe) -> State:
    """An SDXL pipeline as one all-in-one checkpoint in the original (SGM) layout, as checkpoints/ holds
    SDXL models: ``model.diffusion_model.``, ``first_stage_model.``, CLIP-L under
    ``conditioner.embedders.0.transformer.`` and CLIP-G (OpenCLIP names) under ``conditioner.embedders.1.model.``."""
    from nodes.checkpoint import unet_to_ldm, vae_to_ldm

    state = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update({"conditioner.embedders.0.transformer." + _clip_key(k): v
                  for k, v in pipe.text_encoder.state_dict().items() if not k.endswith("position_ids")})
    state.update({"conditioner.embedders.1.model." + k: v
                  for k, v in open_clip_layout(pipe.text_encoder_2.state_dict()).items()})
    return state


#: where ComfyUI's SD3 checkpoints keep each text encoder (transformers' names below the prefix)
SD3_TEXT_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                     "t5": "text_encoders.t5xxl.transformer."}


def sd3_checkpoint(pipe) -> State:
    """An SD3 pipeline as one all-in-one checkpoint as ComfyUI saves it (``sd3.5_*_incl_clips*``, what
    CheckpointLoaderSimple reads): the original MMDiT, the LDM VAE and the three text encoders."""
    from nodes.checkpoint import UNET_PREFIX, vae_to_ldm

    state = {UNET_PREFIX + k: v for k, v in sd3_original(pipe.transformer).items()}
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    encoders = {"clip_l": pipe.text_encoder, "clip_g": pipe.text_encoder_2, "t5": pipe.text_encoder_3}
    for slot, model in encoders.items():
        if model is None:
            continue
        # T5's tied input embedding is kept too (diffusers' reader of these files expects it), as a copy
        state.update({SD3_TEXT_PREFIXES[slot] + (_clip_key(k) if slot != "t5" else k): v.clone()
                      for k, v in model.state_dict().items() if not k.endswith("position_ids")})
    return state


def z_image_original(transformer) -> State:
    """A ZImageTransformer2DModel as the original checkpoint (ComfyUI's diffusion_models file) names it: fused
    ``attention.qkv``, ``attention.out``, ``q_norm`` / ``k_norm``, ``x_embedder`` and ``final_layer`` without
    the patch-size key -- the inverse of diffusers' single-file conversion."""
    import torch

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


def qwen3_causal_lm(text_encoder) -> State:
    """A transformers Qwen3Model as Qwen3ForCausalLM names it (tied head left out), as ``qwen_3_4b`` holds it."""
    return {f"model.{k}": v for k, v in text_encoder.state_dict().items()}


def qwen25_vl_original(state: State) -> State:
    """A transformers-5 Qwen2.5-VL state dict under the names the original checkpoint (and ComfyUI's
    text_encoders/ file) keeps: ``model.layers...``, ``visual...``, ``lm_head``."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = k[len("model."):]
        out[k] = v.detach().clone()
    return out


_RESNET = (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
           ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))


def _wan_resnet(leaf: str) -> str:
    for new, old in _RESNET:
        if leaf.startswith(new):
            return old + leaf[len(new):]
    return leaf


def wan_vae_layout(state: State) -> State:
    """An AutoencoderKLQwenImage state dict under Wan 2.1's original names (ComfyUI's
    ``qwen_image_vae.safetensors``): the inverse of diffusers' Wan VAE conversion."""
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
                   else f"{part}.middle.{2 * int(idx)}.{_wan_resnet(leaf)}")
        elif rest.startswith("down_blocks."):
            idx, leaf = rest[len("down_blocks."):].split(".", 1)
            new = f"{part}.downsamples.{idx}.{_wan_resnet(leaf)}"
        elif rest.startswith("up_blocks."):
            block, kind, idx, leaf = rest[len("up_blocks."):].split(".", 3)
            number = 4 * int(block) + (3 if kind == "upsamplers" else int(idx))
            new = f"{part}.upsamples.{number}.{_wan_resnet(leaf) if kind == 'resnets' else leaf}"
        out[new] = value.detach().clone()
    return out
