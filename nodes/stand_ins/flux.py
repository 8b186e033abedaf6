"""The Flux.1 family's tiny models and files: FluxPipeline at toy size (dev with the guidance embedding,
schnell without), built from small configs as diffusers' own Flux pipeline tests build theirs, and the single
files ComfyUI users keep -- the diffusion model in Black Forest Labs' layout, clip_l, t5xxl, the VAE, and the
all-in-one checkpoint -- written from the pipeline's weights.

The transformer is the real shape family at toy size: 16-channel latents packed 2x2 (64 input channels),
one double and one single block, 2 heads of 16 (rope axes 4 + 6 + 6), T5 and CLIP widths 32. No torch is
imported until a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .layouts import State, _clip_key, _swap, save, text_encoder_state, vae_state
from .tiny import CLIP_DIM, IMAGE_SIZE, T5_TOKENIZER, clip_tokenizer, tiny_clip

if TYPE_CHECKING:
    import torch

SCHNELL_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0,
                     "use_dynamic_shifting": False}
T5_DIM = 32


def transformer_config(guidance: bool = True, **changes) -> dict:
    return {"patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
            "num_attention_heads": 2, "joint_attention_dim": T5_DIM, "pooled_projection_dim": CLIP_DIM,
            "guidance_embeds": guidance, "axes_dims_rope": (4, 6, 6), **changes}


def build_flux(workdir: Path, seed: int = 0, guidance: bool = True):
    """FluxPipeline at toy size (64x64 images, 8x8 latents, 16 image tokens)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    from nodes.families.flux import DEV_SCHEDULER

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**transformer_config(guidance))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(  # Flux's VAE: 16 channels, no quant convs, its scaling and shift; 4 levels (factor 8)
        in_channels=3, out_channels=3, block_out_channels=(8, 16, 16, 24), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=1, norm_num_groups=8,
        sample_size=IMAGE_SIZE, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
        use_post_quant_conv=False)
    tokenizer = clip_tokenizer(workdir)
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip(tokenizer)
    torch.manual_seed(seed + 3)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=32128, d_model=T5_DIM, d_kv=8, d_ff=64, num_layers=2,
                                             num_heads=4, decoder_start_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(DEV_SCHEDULER if guidance else SCHNELL_SCHEDULER)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=T5TokenizerFast.from_pretrained(str(T5_TOKENIZER)),
                        transformer=transformer)


def flux_original(transformer) -> State:
    """A FluxTransformer2DModel's weights in Black Forest Labs' names (fused q/k/v, fused single-block input,
    (shift, scale) final modulation), as ``flux1-dev.safetensors`` holds them."""
    import torch

    sd = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    out = {}

    def put(new: str, old: str) -> None:
        for leaf in ("weight", "bias"):
            if f"{old}.{leaf}" in sd:
                out[f"{new}.{leaf}"] = sd.pop(f"{old}.{leaf}")

    emb = "time_text_embed."
    for new, old in (("time_in.in_layer", "timestep_embedder.linear_1"),
                     ("time_in.out_layer", "timestep_embedder.linear_2"),
                     ("vector_in.in_layer", "text_embedder.linear_1"),
                     ("vector_in.out_layer", "text_embedder.linear_2"),
                     ("guidance_in.in_layer", "guidance_embedder.linear_1"),
                     ("guidance_in.out_layer", "guidance_embedder.linear_2")):
        put(new, emb + old)
    put("txt_in", "context_embedder")
    put("img_in", "x_embedder")
    put("final_layer.linear", "proj_out")
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap(sd.pop(f"norm_out.linear.{leaf}"))
    for i in range(transformer.config.num_layers):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for new, old in (("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
                         ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
                         ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                         ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2")):
            put(f"{b}.{new}", f"{d}.{old}")
        for leaf in ("weight", "bias"):
            out[f"{b}.img_attn.qkv.{leaf}"] = torch.cat([sd.pop(f"{d}.attn.to_{x}.{leaf}") for x in "qkv"])
            out[f"{b}.txt_attn.qkv.{leaf}"] = torch.cat([sd.pop(f"{d}.attn.add_{x}_proj.{leaf}") for x in "qkv"])
        for stream, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            out[f"{b}.{stream}_attn.norm.query_norm.scale"] = sd.pop(f"{d}.attn.{q}.weight")
            out[f"{b}.{stream}_attn.norm.key_norm.scale"] = sd.pop(f"{d}.attn.{k}.weight")
    for i in range(transformer.config.num_single_layers):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{b}.modulation.lin", f"{d}.norm.linear")
        put(f"{b}.linear2", f"{d}.proj_out")
        for leaf in ("weight", "bias"):
            out[f"{b}.linear1.{leaf}"] = torch.cat([sd.pop(f"{d}.attn.to_{x}.{leaf}") for x in "qkv"]
                                                   + [sd.pop(f"{d}.proj_mlp.{leaf}")])
        out[f"{b}.norm.query_norm.scale"] = sd.pop(f"{d}.attn.norm_q.weight")
        out[f"{b}.norm.key_norm.scale"] = sd.pop(f"{d}.attn.norm_k.weight")
    if sd:
        raise ValueError(f"no BFL name for {sorted(sd)[:5]}")
    return out


def write_flux_parts(pipe, root: Path, prefix: str = "tiny-flux", dtype: torch.dtype | None = None,
                     comfy_prefix: bool = False, names: dict | None = None) -> dict:
    """Flux's parts in ComfyUI's folders under ``root`` (``comfy_prefix``: the diffusion model's names under
    ``model.diffusion_model.``, as ComfyUI saves them; ``names``: the file names by part, else from
    ``prefix``); returns the file names by part."""
    import torch

    from nodes.checkpoint import VAE_PREFIX, vae_to_ldm

    names = names or {"unet": f"{prefix}.safetensors", "clip_l": f"{prefix}-clip_l.safetensors",
                      "t5": f"{prefix}-t5xxl.safetensors", "vae": f"{prefix}-ae.safetensors"}
    net = flux_original(pipe.transformer)
    if comfy_prefix:
        net = {"model.diffusion_model." + k: v for k, v in net.items()}
    save(net, root / "diffusion_models" / names["unet"], dtype)
    # as ComfyUI's clip_l.safetensors: nested names, with the projection and the position ids
    clip = {_clip_key(k): v for k, v in pipe.text_encoder.state_dict().items()}
    clip["text_projection.weight"] = torch.eye(CLIP_DIM)
    clip["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save(clip, root / "text_encoders" / names["clip_l"], dtype)
    t5 = {k: v for k, v in pipe.text_encoder_2.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied
    save(t5, root / "text_encoders" / names["t5"], dtype)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)).items()}
    save(vae, root / "vae" / names["vae"], dtype)
    return names


def flux_checkpoint(pipe) -> State:
    """The whole pipeline as one all-in-one file in ComfyUI's Flux checkpoint names: the transformer (BFL
    layout) under ``model.diffusion_model.``, CLIP-L and T5 under ``text_encoders.{clip_l,t5xxl}.transformer.``,
    the VAE (LDM names) under ``vae.``."""
    from nodes.checkpoint import VAE_PREFIX, vae_to_ldm

    state = {"model.diffusion_model." + k: v for k, v in flux_original(pipe.transformer).items()}
    state.update({"text_encoders.clip_l.transformer." + _clip_key(k): v
                  for k, v in pipe.text_encoder.state_dict().items() if not k.endswith("position_ids")})
    state.update({"text_encoders.t5xxl.transformer." + k: v for k, v in pipe.text_encoder_2.state_dict().items()
                  if k != "encoder.embed_tokens.weight"})
    state.update({"vae." + k.removeprefix(VAE_PREFIX): v
                  for k, v in vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)).items()})
    return state


def flux_transformer_file(pipe) -> State:
    """``diffusion_models/`` Flux file: the transformer in BFL names."""
    return flux_original(pipe.transformer)


def flux_clip_l(pipe) -> State:
    """``text_encoders/clip_l.safetensors`` as ComfyUI ships it: nested names, the projection, position ids."""
    import torch

    clip = text_encoder_state(pipe.text_encoder)
    clip["text_projection.weight"] = torch.eye(CLIP_DIM)
    clip["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return clip


def flux_vae(pipe) -> State:
    return vae_state(pipe.vae)
