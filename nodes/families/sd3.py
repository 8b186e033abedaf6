"""Stable Diffusion 3 / 3.5: an MMDiT over 16-channel latents (rectified flow), conditioned on CLIP-L and
CLIP-G (penultimate layers, concatenated, zero-padded to T5's width) followed by T5-XXL's tokens, and on the
two CLIPs' pooled projections. T5 is optional, as in the pipeline: without it its 256 tokens are zeros."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, LatentFormat, Parts, TextEncoder, read_json, repeat_to
from .clip import run_clip, window_ids

#: ComfyUI's SD3 latent preview factors (rows: the 16 channels; columns: R, G, B) and bias
SD3_RGB = (
    (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
)
SD3_BIAS = (0.2394, 0.2135, 0.1925)
T5_TOKENS = 256
#: an all-in-one SD3 checkpoint's prefixes: the MMDiT, the VAE and each text encoder (by slot)
CHECKPOINT_NETWORK, CHECKPOINT_VAE = "model.diffusion_model.", "first_stage_model."
CHECKPOINT_ENCODERS = {"clip_l": "text_encoders.clip_l.", "clip_g": "text_encoders.clip_g.",
                       "t5": "text_encoders.t5xxl."}


class StableDiffusion3(Family):
    name = "sd3"
    label = "Stable Diffusion 3.x"
    pipelines = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")
    network_part = "transformer"
    encoder_slots = (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2"),
                     ("t5", "tokenizer_3", "text_encoder_3"))
    optional_slots = ("t5",)
    latent = LatentFormat(16, 8, SD3_RGB, SD3_BIAS)
    default_scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                         "shift": 3.0}

    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "SD3Transformer2DModel"

    def network_file_mismatch(self, shapes: Any, config: Any) -> str:
        """An MMDiT in the original layout (``joint_blocks``, with or without ``model.diffusion_model.``):
        block count, width, text width, position-embedding size, QK norm and dual-attention blocks (what
        tells SD3 medium, SD3.5 medium and SD3.5 large apart)."""
        inner = {k.removeprefix(CHECKPOINT_NETWORK): v for k, v in shapes.items()
                 if not k.startswith(("text_encoders.", CHECKPOINT_VAE))}
        blocks = {int(k.split(".")[1]) for k in inner if k.startswith("joint_blocks.")}
        if not blocks:
            return "not an MMDiT (no joint_blocks)"
        if len(blocks) != config.get("num_layers"):
            return f"{len(blocks)} joint blocks, the config has {config.get('num_layers')}"
        width = config["num_attention_heads"] * config["attention_head_dim"]
        proj = inner.get("x_embedder.proj.weight")
        want = (width, config["in_channels"], config["patch_size"], config["patch_size"])
        if proj is None or tuple(proj) != want:
            return f"patch embedding {proj}, the config wants {want}"
        ctx = inner.get("context_embedder.weight")
        if ctx is None or ctx[1] != config["joint_attention_dim"]:
            return f"context embedder {ctx}, the config's joint_attention_dim is {config['joint_attention_dim']}"
        pos, size = inner.get("pos_embed"), config.get("pos_embed_max_size")
        if pos is not None and size is not None and tuple(pos) != (1, size * size, width):
            return f"position embedding {pos}, the config's pos_embed_max_size is {size}"
        qk = "joint_blocks.0.x_block.attn.ln_q.weight" in inner
        if qk != bool(config.get("qk_norm")):
            return f"QK norm {'present' if qk else 'absent'}, the config's qk_norm is {config.get('qk_norm')}"
        dual = sorted({int(k.split(".")[1]) for k in inner if ".x_block.attn2." in k})
        if dual != sorted(config.get("dual_attention_layers") or []):
            return f"dual-attention blocks {dual}, the config has {list(config.get('dual_attention_layers') or [])}"
        return ""

    def matches_file(self, shapes: Any) -> bool:
        """An all-in-one SD3 checkpoint: the MMDiT under ``model.diffusion_model.``."""
        return any(k.startswith(CHECKPOINT_NETWORK + "joint_blocks.") for k in shapes)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        """An all-in-one SD3 / SD3.5 checkpoint (MMDiT, VAE, and those of CLIP-L, CLIP-G and T5-XXL it
        holds) through diffusers' ``from_single_file``, configured by the first SD3 folder whose
        transformer config fits the file's shapes (the shipped SD3.5 medium and large ones among them).
        A text encoder the file lacks is left out (the CLIP then lacks that slot; T5 is optional)."""
        from diffusers import StableDiffusion3Pipeline

        from ..checkpoint import checkpoint_shapes
        from . import for_folder

        shapes = checkpoint_shapes(path)
        tried = []
        for folder in config_folders:
            cfg = folder / self.network_part / "config.json"
            try:
                if not cfg.is_file() or for_folder(folder) is not self:
                    continue
            except NodeError:
                continue
            problem = self.network_file_mismatch(shapes, read_json(cfg))
            if problem:
                tried.append(f"{folder.name} ({problem})")
                continue
            absent: dict[str, None] = {}
            for slot, tok, enc in self.encoder_slots:
                if not any(k.startswith(CHECKPOINT_ENCODERS[slot]) for k in shapes):
                    absent |= {tok: None, enc: None}
            if not any(k.startswith(CHECKPOINT_VAE) for k in shapes):
                absent["vae"] = None
            try:
                pipe = StableDiffusion3Pipeline.from_single_file(
                    str(path), config=str(folder), torch_dtype=dtype, local_files_only=True,
                    low_cpu_mem_usage=False, **absent)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise NodeError(f"cannot load checkpoint {path.name}: {exc}") from exc
            t5 = pipe.text_encoder_3
            if t5 is not None and t5.encoder.embed_tokens.weight.is_meta:
                t5.encoder.embed_tokens = t5.shared  # files keep T5's token table once, as shared.weight
            encoders = {slot: TextEncoder(getattr(pipe, tok), getattr(pipe, enc))
                        for slot, tok, enc in self.encoder_slots if getattr(pipe, enc, None) is not None}
            return Parts(network=pipe.transformer, encoders=encoders, vae=pipe.vae,
                         scheduler_config=read_json(folder / "scheduler" / "scheduler_config.json"))
        raise NodeError(f"{path.name}: an SD3 checkpoint that no SD3 configuration fits; tried "
                        + (", ".join(tried) or "no SD3 configuration folders"))

    def encode(self, clip: Any, text: str, ctx: Any = None, texts: dict | None = None,
               empty_padding: str = "empty_prompt", **options: Any):
        """As ``StableDiffusion3Pipeline.encode_prompt`` with ``max_sequence_length=256``. Without T5 the
        embeddings are the padded CLIP states only; :meth:`network_inputs` adds T5's zeros, whose width is
        the transformer's ``joint_attention_dim``.

        ``texts`` (slot -> prompt) gives each encoder its own prompt (the pipeline's ``prompt_2`` and
        ``prompt_3``; ComfyUI's CLIPTextEncodeSD3). ``empty_padding="none"`` leaves out what an empty prompt
        would encode, as ComfyUI does: no CLIP tokens (and a zero pooled vector) when both CLIP prompts are
        empty, no T5 tokens when T5's is."""
        from ..types import Conditioning

        prompts = {slot: (texts or {}).get(slot, text) for slot in ("clip_l", "clip_g", "t5")}
        drop = empty_padding == "none"
        layer = clip.last_layer if clip.last_layer is not None else -2
        encoders = {slot: self.encoder(clip, slot) for slot in ("clip_l", "clip_g")}
        dtype = encoders["clip_l"].model.dtype
        extra: dict[str, Any] = {"dropped_tokens": 0}
        if drop and not prompts["clip_l"] and not prompts["clip_g"]:
            width = sum(int(e.model.config.hidden_size) for e in encoders.values())
            clip_states = None
            pooled = torch.zeros(1, sum(int(e.model.config.projection_dim) for e in encoders.values()),
                                 dtype=dtype, device=clip.device)
        else:
            hidden, pools = [], []
            for slot, enc in encoders.items():
                ids, mask, cut = window_ids(enc, prompts[slot])
                extra["dropped_tokens"] = max(extra["dropped_tokens"], cut)
                h, first = run_clip(enc, ids, mask, clip.device, layer)
                hidden.append(h.to(dtype))
                pools.append(first)
            clip_states, pooled = torch.cat(hidden, dim=-1), torch.cat(pools, dim=-1)
            width = clip_states.shape[-1]
        t5 = clip.encoders.get("t5")
        states = None
        if t5 is None:
            extra["t5_missing"] = True
        elif not (drop and not prompts["t5"]):
            states = encode_t5(t5, prompts["t5"], clip.device)
        else:
            extra["t5_dropped"] = True
        if states is None:  # CLIP states alone (or, with nothing to encode, ComfyUI's 77 zero tokens)
            embeds = clip_states if clip_states is not None else torch.zeros(1, 77, width, dtype=dtype,
                                                                             device=clip.device)
        elif clip_states is None:
            embeds = states
        else:
            clip_states = torch.nn.functional.pad(clip_states, (0, states.shape[-1] - clip_states.shape[-1]))
            embeds = torch.cat([clip_states, states], dim=-2)
        return Conditioning(embeds, text, pooled=pooled, extra=extra)

    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        b = latent_shape[0]
        embeds = cond.embeds
        width = int(model.network.config.joint_attention_dim)
        if embeds.shape[-1] < width:
            embeds = torch.nn.functional.pad(embeds, (0, width - embeds.shape[-1]))
        if cond.extra.get("t5_missing"):
            embeds = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], T5_TOKENS, width)], dim=-2)
        return {"encoder_hidden_states": repeat_to(embeds, b, what),
                "pooled_projections": repeat_to(cond.pooled, b, what)}

    def network(self, model: Any):
        transformer = model.network

        def call(x: torch.Tensor, t: torch.Tensor, **inputs: Any) -> torch.Tensor:
            inputs.pop("return_dict", None)
            return transformer(hidden_states=x, timestep=t.expand(x.shape[0]), return_dict=False, **inputs)[0]

        return call


@torch.inference_mode()
def encode_t5(enc: Any, text: str, device: torch.device, tokens: int = T5_TOKENS) -> torch.Tensor:
    """T5 encoder states [1, tokens, d_model] as the SD3 pipeline computes them."""
    ids = enc.tokenizer(text, padding="max_length", max_length=tokens, truncation=True, add_special_tokens=True,
                        return_tensors="pt").input_ids
    return enc.model(ids.to(device))[0].to(dtype=enc.model.dtype, device=device)
