"""The single-file writers, from the package (nodes.stand_ins.layouts), under the names tests import; and
:func:`controlnet_original` -- a ControlNetModel as the original ControlNet checkpoints name it
(``control_model.input_blocks``, ``input_hint_block``, ``zero_convs``, ``middle_block_out``)."""

import re

import torch

from nodes.checkpoint import unet_key_to_ldm
from nodes.stand_ins.layouts import (  # noqa: F401
    _clip_key,
    _swap,
    open_clip_layout,
    save,
    sd1_checkpoint,
    sd3_checkpoint,
    sd3_original,
    sdxl_checkpoint,
    text_encoder_state,
    vae_state,
    write_sd3_parts,
)


def controlnet_original(net) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel's weights in the original ControlNet layout: the UNet encoder's names,
    the hint encoder as ``input_hint_block`` (convolutions at 0, 2, 4, ..., the last at 14), the zero
    convolutions as ``zero_convs.i.0`` and ``middle_block_out.0``, all under ``control_model.``."""
    lpb = net.config.layers_per_block
    out = {}
    for key, value in net.state_dict().items():
        head, _, leaf = key.rpartition(".")
        if head == "controlnet_cond_embedding.conv_in":
            name = f"input_hint_block.0.{leaf}"
        elif head == "controlnet_cond_embedding.conv_out":
            name = f"input_hint_block.14.{leaf}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", head):
            name = f"input_hint_block.{2 * (int(m[1]) + 1)}.{leaf}"
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", head):
            name = f"zero_convs.{m[1]}.0.{leaf}"
        elif head == "controlnet_mid_block":
            name = f"middle_block_out.0.{leaf}"
        else:
            name = unet_key_to_ldm(key, lpb, set())
        out["control_model." + name] = value.detach().clone().contiguous()
    return out
