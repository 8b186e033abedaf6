"""The single-file writers, from the package (nodes.stand_ins.layouts), under the names tests import."""

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
