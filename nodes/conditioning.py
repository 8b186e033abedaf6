"""TextEncode: a prompt -> CONDITIONING, exactly as the model family's diffusers pipeline encodes it.

What "encode" means is the family's (:meth:`nodes.families.base.Family.encode`): SD1.x/SD2.x take the CLIP
encoder's final output, SDXL two CLIPs' penultimate layers and a pooled embedding, SD3 two CLIPs and T5.
Prompts longer than a CLIP window are truncated by default (what diffusers does, so images keep pixel parity
with it) with a warning saying how many tokens were dropped; for SD1.x/SD2.x ``long_prompt: chunk`` instead
encodes every 75-token window between its own start and end tokens and concatenates the windows along the
sequence axis (ComfyUI's way). Positive and negative may then differ in length: the sampler evens them out
with :func:`nodes.types.match_lengths`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .types import Conditioning, TextEncoderBundle

if TYPE_CHECKING:
    import torch


def check_clip(clip: Any, what: str = "clip") -> TextEncoderBundle:
    if not isinstance(clip, TextEncoderBundle):
        raise NodeError(f"{what}: expected a CLIP (from a model or CLIP loader), got {type(clip).__name__}")
    return clip


def encode(clip: Any, text: str, ctx: Any = None, **options: Any) -> Conditioning:
    """The family's encoding of ``text`` (options: ``long_prompt``, SDXL's sizes, ...)."""
    from .lora import clip_applied

    clip = check_clip(clip)
    with clip_applied(clip):  # exactly this CLIP's LoRAs on the shared encoders
        return clip.family.encode(clip, text, ctx, **options)


def encode_truncated(clip: TextEncoderBundle, text: str) -> tuple[torch.Tensor, int]:
    """The first CLIP's final output [1, 77, D] for ``text`` and the number of tokens cut off the end."""
    from .families.clip import run_clip, window_ids
    from .lora import clip_applied

    ids, mask, dropped = window_ids(clip.first, text)
    with clip_applied(clip):
        return run_clip(clip.first, ids, mask, clip.device)[0], dropped


class TextEncode(Node):
    """Encode a prompt with the model's text encoders, as its diffusers pipeline does.

    Prompts longer than the encoder's window (77 tokens with start and end) are truncated with a warning,
    or (SD1.x / SD2.x) with long_prompt=chunk encoded in 75-token windows that are concatenated.
    """

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Text Encode"

    class Inputs(NodeInputs):
        text: str = Widget("", multiline=True, dynamicPrompts=True)
        clip: Any = Link("CLIP")
        long_prompt: Literal["truncate", "chunk"] = Widget("truncate", optional=True)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING", "the prompt's embeddings"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        clip = check_clip(inputs.clip)
        mode = inputs.long_prompt
        if mode == "chunk" and clip.family.name not in ("sd1", "sd2"):
            raise NodeError(f"long_prompt: chunk is for SD1.x / SD2.x text encoders; this is "
                            f"{clip.family.label}: use truncate")
        options = {"long_prompt": mode} if mode == "chunk" else {}
        return (encode(clip, inputs.text, ctx, **options),)
