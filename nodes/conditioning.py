"""TextEncode: a prompt -> CONDITIONING, exactly as diffusers' ``StableDiffusionPipeline.encode_prompt``.

Tokens are padded to the tokenizer's ``model_max_length`` (77 for SD1.x) and truncated; the attention mask
is passed only when the text encoder's config asks for it (``use_attention_mask``); the embedding is the
encoder's last hidden state. Longer prompts are truncated by default (what diffusers does, so images keep
pixel parity with it) with a warning saying how many tokens were dropped; ``long_prompt: chunk`` instead
encodes every 75-token window between its own start and end tokens and concatenates the windows along the
sequence axis (ComfyUI's way). Positive and negative may then differ in length: the sampler evens them out
with :func:`nodes.types.match_lengths`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from graph_runtime import Link, Node, NodeInputs, Output, Widget

from .types import Conditioning, TextEncoderBundle


def _mask(clip: TextEncoderBundle, attention_mask: torch.Tensor) -> torch.Tensor | None:
    if getattr(clip.text_encoder.config, "use_attention_mask", False):
        return attention_mask.to(clip.device)
    return None


@torch.inference_mode()
def encode_truncated(clip: TextEncoderBundle, text: str) -> tuple[torch.Tensor, int]:
    """Embeddings [1, max_length, D] and the number of tokens cut off the end."""
    tok = clip.tokenizer
    inputs = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                 return_tensors="pt")
    full = tok(text, padding="longest", return_tensors="pt").input_ids
    dropped = max(0, full.shape[-1] - inputs.input_ids.shape[-1])
    out = clip.text_encoder(inputs.input_ids.to(clip.device), attention_mask=_mask(clip, inputs.attention_mask))
    return out[0].to(dtype=clip.text_encoder.dtype, device=clip.device), dropped


@torch.inference_mode()
def encode_chunked(clip: TextEncoderBundle, text: str) -> torch.Tensor:
    """Embeddings [1, 77 * windows, D]: each window is start + up to 75 tokens + end, padded like diffusers."""
    tok = clip.tokenizer
    length = tok.model_max_length
    body = tok(text, add_special_tokens=False).input_ids
    width = length - 2
    windows = [body[i:i + width] for i in range(0, len(body), width)] or [[]]
    ids, masks = [], []
    for w in windows:
        row = [tok.bos_token_id, *w, tok.eos_token_id]
        masks.append([1] * len(row) + [0] * (length - len(row)))
        ids.append(row + [tok.pad_token_id] * (length - len(row)))
    input_ids = torch.tensor(ids, dtype=torch.long)
    mask = _mask(clip, torch.tensor(masks, dtype=torch.long))
    out = clip.text_encoder(input_ids.to(clip.device), attention_mask=mask)[0]
    return out.to(dtype=clip.text_encoder.dtype).reshape(1, -1, out.shape[-1])


class TextEncode(Node):
    """Encode a prompt with the text encoder (CLIP), as diffusers' StableDiffusionPipeline does.

    Prompts longer than the encoder's window (77 tokens with start and end) are truncated with a warning,
    or with long_prompt=chunk encoded in 75-token windows that are concatenated.
    """

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Text Encode"

    class Inputs(NodeInputs):
        text: str = Widget("", multiline=True, dynamicPrompts=True)
        clip: Any = Link("CLIP")
        long_prompt: Literal["truncate", "chunk"] = Widget("truncate", optional=True)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING", "the prompt's embeddings"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        clip: TextEncoderBundle = inputs.clip
        if (inputs.long_prompt or "truncate") == "chunk":
            embeds = encode_chunked(clip, inputs.text)
            return (Conditioning(embeds=embeds, prompt=inputs.text, extra={"windows": embeds.shape[1] // clip.tokenizer.model_max_length}),)
        embeds, dropped = encode_truncated(clip, inputs.text)
        if dropped:
            ctx.warn(f"the prompt is {dropped} tokens longer than the text encoder's window of "
                     f"{clip.tokenizer.model_max_length} tokens; those {dropped} tokens were dropped "
                     "(set long_prompt to chunk to keep them)")
        return (Conditioning(embeds=embeds, prompt=inputs.text, extra={"dropped_tokens": dropped}),)
