"""What a single .safetensors file is, from its tensor names and shapes alone (no weights read), so a
refusal can say what the file looks like and which loader takes it."""

from __future__ import annotations


def describe(shapes: dict[str, tuple[int, ...]]) -> str:
    """A short phrase such as "an SD3 MMDiT diffusion model (original layout)"."""
    keys = list(shapes)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    def strip(k: str) -> str:
        return k.removeprefix("model.diffusion_model.")

    inner = [strip(k) for k in keys]
    if any(k.startswith("joint_blocks.") for k in inner):
        return "an SD3 MMDiT diffusion model (original layout; load it with UNETLoader)"
    if "cap_embedder.1.weight" in inner and any(".attention.qkv." in k for k in inner):
        return "a Z-Image S3-DiT diffusion model (original layout; load it with UNETLoader)"
    if "txt_norm.weight" in inner and "img_in.weight" in inner:
        return "a Qwen-Image MMDiT diffusion model (load it with UNETLoader)"
    if any(k.startswith("double_blocks.") for k in inner):
        return "a Flux diffusion model (original layout; load it with UNETLoader)"
    if has("model.diffusion_model.input_blocks.") and has("first_stage_model."):
        return "an all-in-one Stable Diffusion checkpoint (original layout; CheckpointLoaderSimple)"
    if any(k.startswith("input_blocks.") for k in inner):
        label = "SDXL" if any(k.startswith("label_emb.") for k in inner) else "SD1.x/SD2.x"
        return f"an {label} UNet (original layout; UNETLoader)"
    if has("down_blocks.") and has("conv_in.") and not has("decoder."):
        return "a diffusers UNet"
    if has("lora_") or any(".lora_down." in k or ".lora_A." in k for k in keys):
        return "a LoRA (LoraLoader)"
    if has("text_model.encoder.layers."):
        return "a CLIP text encoder (CLIPLoader)"
    if has("encoder.block.") and "shared.weight" in shapes:
        return "a T5 text encoder (CLIPLoader)"
    if any(".merger." in k and "visual." in k for k in keys):
        return "a Qwen2.5-VL text encoder (CLIPLoader, type qwen_image)"
    if any(k.removeprefix("model.").startswith("layers.0.self_attn.q_norm.") for k in keys):
        return "a Qwen3 text encoder (CLIPLoader, type lumina2 for Z-Image)"
    if has("decoder.conv_in.") or has("decoder.up."):
        return "a VAE (VAELoader)"
    if has("single_transformer_blocks.") and has("x_embedder."):
        return "a Flux transformer in diffusers' names (UNETLoader)"
    if has("transformer_blocks.") and has("pos_embed."):
        return "a diffusers transformer"
    return f"a file of {len(keys)} tensors that is no known model part"
