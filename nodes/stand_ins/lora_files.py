"""Tiny LoRA files for a built pipeline: random low-rank weights on its attention layers (and its CLIP text
encoders' layers), in the layouts LoraLoader reads -- kohya's (``lora_unet_*`` / ``lora_te*_``, with
``.alpha``) for the UNet families, diffusers' / peft's (``transformer.*.lora_A / lora_B``) for the transformer
ones, whose diffusers loaders read no kohya names."""

from __future__ import annotations

import re

RANK, ALPHA = 4, 2.0
#: a CLIP text encoder's layers a LoRA trains
TE_LAYERS = re.compile(r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")


def linears(module, keep) -> dict:
    """name -> Linear layer of ``module`` for the names ``keep`` accepts."""
    import torch

    return {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and keep(n)}


def low_rank(layers: dict, seed: int, rank: int = RANK) -> dict:
    """name -> (down [r, in], up [out, r]): small random LoRA weights for each layer."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(rank, m.in_features, generator=g) / m.in_features ** 0.5,
                torch.randn(m.out_features, rank, generator=g) * 0.3) for n, m in layers.items()}


def kohya(parts: dict, alpha: float = ALPHA) -> dict:
    """kohya's layout: ``<prefix><module with _>.lora_down / lora_up / alpha``; parts: prefix -> weights."""
    import torch

    out = {}
    for prefix, weights in parts.items():
        for name, (down, up) in weights.items():
            k = prefix + name.replace(".", "_")
            out |= {f"{k}.lora_down.weight": down, f"{k}.lora_up.weight": up, f"{k}.alpha": torch.tensor(alpha)}
    return out


def peft_layout(parts: dict) -> dict:
    """diffusers' / peft's layout: ``<component>.<module>.lora_A / lora_B`` (no alpha: scale 1)."""
    return {f"{comp}.{name}.lora_{ab}.weight": w for comp, weights in parts.items()
            for name, (down, up) in weights.items() for ab, w in (("A", down), ("B", up))}


def _text_encoder_weights(pipe, prefixes: dict[str, str], seed: int) -> dict:
    return {prefix: low_rank(linears(getattr(pipe, attr), lambda n: bool(TE_LAYERS.search(n))), seed + i)
            for i, (attr, prefix) in enumerate(prefixes.items()) if getattr(pipe, attr, None) is not None}


def sgm_names(unet, weights: dict) -> dict:
    """UNet LoRA weights renamed to the original (sgm / ldm) UNet's module names, as SDXL LoRAs name them."""
    from nodes.checkpoint import unet_key_to_ldm

    keys = list(unet.state_dict())
    with_attn = {int(m[1]) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    return {unet_key_to_ldm(n + ".weight", unet.config.layers_per_block, with_attn)[: -len(".weight")]: w
            for n, w in weights.items()}


def sd1_lora(pipe, seed: int = 1) -> dict:
    """An SD1.x / SD2.x LoRA in kohya's layout over diffusers' UNet names, with the text encoder's part."""
    unet = low_rank(linears(pipe.unet, lambda n: ".attentions." in n), seed)
    return kohya({"lora_unet_": unet} | _text_encoder_weights(pipe, {"text_encoder": "lora_te_"}, seed + 1))


def sdxl_lora(pipe, seed: int = 3) -> dict:
    """An SDXL LoRA in kohya's layout over the original UNet names, with both text encoders' parts."""
    unet = sgm_names(pipe.unet, low_rank(linears(pipe.unet, lambda n: ".attentions." in n), seed))
    te = _text_encoder_weights(pipe, {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}, seed + 1)
    return kohya({"lora_unet_": unet} | te)


def transformer_lora(pipe, seed: int = 6) -> dict:
    """A transformer family's LoRA (its attention layers) in diffusers' / peft's layout."""
    return peft_layout({"transformer": low_rank(linears(pipe.transformer, lambda n: ".attn." in n), seed)})
