"""CLIP text encoding as diffusers' pipelines do it (shared by the CLIP-based families).

Tokens are padded to the tokenizer's ``model_max_length`` (77) and truncated; the attention mask is passed
only when the encoder's config asks for it (``use_attention_mask``). ``layer`` picks the hidden state:
None is the encoder's final output (SD1.x/SD2.x pipelines), ``-2`` the penultimate layer (SDXL, SD3), and
a CLIPSetLastLayer value ``-n`` the n-th last layer. ``chunk_ids`` gives ComfyUI's long-prompt windows:
every 75 tokens between their own start and end tokens.
"""

from __future__ import annotations

import torch

from .base import TextEncoder


def _mask(enc: TextEncoder, attention_mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    if getattr(enc.model.config, "use_attention_mask", False):
        return attention_mask.to(device)
    return None


def window_ids(enc: TextEncoder, text: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(input_ids [1, 77], attention_mask, dropped)``: one padded, truncated window and the number of
    tokens cut off its end."""
    tok = enc.tokenizer
    inputs = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                 return_tensors="pt")
    full = tok(text, padding="longest", return_tensors="pt").input_ids
    return inputs.input_ids, inputs.attention_mask, max(0, full.shape[-1] - inputs.input_ids.shape[-1])


def chunk_ids(enc: TextEncoder, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [windows, 77], attention_mask)``: start + up to 75 tokens + end per window, padded."""
    tok = enc.tokenizer
    length = tok.model_max_length
    body = tok(text, add_special_tokens=False).input_ids
    width = length - 2
    windows = [body[i:i + width] for i in range(0, len(body), width)] or [[]]
    ids, masks = [], []
    for w in windows:
        row = [tok.bos_token_id, *w, tok.eos_token_id]
        masks.append([1] * len(row) + [0] * (length - len(row)))
        ids.append(row + [tok.pad_token_id] * (length - len(row)))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


@torch.inference_mode()
def run_clip(enc: TextEncoder, ids: torch.Tensor, mask: torch.Tensor, device: torch.device,
             layer: int | None = None, final_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden [n, 77, D], first output [n, ...])`` of the encoder; ``first output`` is the pooled
    projection of a CLIPTextModelWithProjection (SDXL's and SD3's pooled embeddings). ``final_norm`` applies
    the encoder's final layer norm to an inner layer (diffusers' ``clip_skip`` in the SD1.x pipeline)."""
    out = enc.model(ids.to(device), attention_mask=_mask(enc, mask, device), output_hidden_states=layer is not None)
    hidden = out[0] if layer is None else out.hidden_states[layer]
    if layer is not None and final_norm:
        hidden = getattr(enc.model, "text_model", enc.model).final_layer_norm(hidden)
    return hidden.to(dtype=enc.model.dtype, device=device), out[0]
