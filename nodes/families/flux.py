"""Flux.1 (dev and schnell): a rectified-flow transformer of double-stream and single-stream blocks over
16-channel latents packed as 2x2 patches (64 values a token), conditioned on T5-XXL's token states, CLIP-L's
pooled output and, for dev, a guidance embedding (FluxGuidance; 3.5 by default, as in ComfyUI and the
pipeline). Image tokens carry (0, row, column) position ids, text tokens zeros. There is no classifier-free
guidance in its pipeline (cfg 1). Dev shifts its schedule by the image size (``use_dynamic_shifting``);
schnell does not.

Single diffusion-model files come in Black Forest Labs' layout (``double_blocks``, ``single_blocks``; what
ComfyUI's ``diffusion_models/flux1-*.safetensors`` hold, bf16, fp16 or fp8 stored) or in diffusers' names;
both are read into a ``FluxTransformer2DModel`` built from the first shipped or local config that fits.
All-in-one checkpoints (ComfyUI's ``flux1-dev-fp8.safetensors``: the transformer under
``model.diffusion_model.``, CLIP-L and T5 under ``text_encoders.clip_l.transformer.`` /
``text_encoders.t5xxl.transformer.``, the VAE under ``vae.``) are split into their parts, each read as its
part loader reads a file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, LatentFormat, Parts, read_json, repeat_to
from .clip import window_ids
from .sd3 import encode_t5

#: FluxPipeline's and ComfyUI's default distilled guidance
DEFAULT_GUIDANCE = 3.5
#: FluxPipeline's default max_sequence_length for T5
T5_TOKENS = 512
PREFIX = "model.diffusion_model."
#: the parts of an all-in-one checkpoint by name prefix
CHECKPOINT_PARTS = {"clip_l": ("text_encoders.clip_l.transformer.",), "t5": ("text_encoders.t5xxl.transformer.",),
                    "vae": ("vae.", "first_stage_model.")}
#: entries of ComfyUI's Flux sigma table
COMFY_TABLE = 10000
#: previews as the grey mean of the channels (no colour factors are fitted for Flux's VAE here)
GREY = ((0.125, 0.125, 0.125),) * 16

#: FLUX.1-dev's scheduler config, for a diffusion model loaded without one
DEV_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                 "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
                 "use_dynamic_shifting": True}


class Flux(Family):
    name = "flux"
    label = "Flux.1"
    pipelines = ("FluxPipeline", "FluxImg2ImgPipeline")
    network_part = "transformer"
    encoder_slots = (("clip_l", "tokenizer", "text_encoder"), ("t5", "tokenizer_2", "text_encoder_2"))
    latent = LatentFormat(16, 8, GREY, None, packing=2)
    comfy_multiplier = 1.0
    default_scheduler = DEV_SCHEDULER

    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "FluxTransformer2DModel"

    # ---- single files ---------------------------------------------------------------------------------
    def network_file_mismatch(self, shapes: Any, config: Any) -> str:
        """Why a diffusion-model file (either layout) does not fit a FluxTransformer2DModel ``config``."""
        inner = {k.removeprefix(PREFIX): tuple(v) for k, v in shapes.items()}
        bfl = any(k.startswith("double_blocks.") for k in inner)
        if not bfl and not any(k.startswith("single_transformer_blocks.") for k in inner):
            return "not a Flux transformer (no double_blocks or single_transformer_blocks)"
        double, single = ("double_blocks.", "single_blocks.") if bfl else ("transformer_blocks.",
                                                                          "single_transformer_blocks.")
        n_double = len({k.split(".")[1] for k in inner if k.startswith(double)})
        n_single = len({k.split(".")[1] for k in inner if k.startswith(single)})
        if (n_double, n_single) != (config.get("num_layers"), config.get("num_single_layers")):
            return (f"{n_double} double and {n_single} single blocks, the config has {config.get('num_layers')} "
                    f"and {config.get('num_single_layers')}")
        width = config["num_attention_heads"] * config["attention_head_dim"]
        names = ("img_in.weight", "txt_in.weight", "vector_in.in_layer.weight") if bfl else (
            "x_embedder.weight", "context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight")
        wants = ((width, config["in_channels"]), (width, config["joint_attention_dim"]),
                 (width, config["pooled_projection_dim"]))
        for key, want in zip(names, wants, strict=True):
            if inner.get(key) != want:
                return f"{key} is {inner.get(key)}, the config wants {want}"
        guidance = any(k.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for k in inner)
        if guidance != bool(config.get("guidance_embeds")):
            return ("a guidance embedding (dev)" if guidance else "no guidance embedding (schnell)") + \
                f", the config has guidance_embeds={config.get('guidance_embeds')}"
        return ""

    def load_network_file(self, path: Path, folder: Path, dtype: torch.dtype) -> Any:
        from ..part_files import _state

        return self._network(_state(path, dtype), path, folder, dtype)

    def _network(self, state: dict, path: Path, folder: Path, dtype: torch.dtype) -> Any:
        from diffusers import FluxTransformer2DModel

        config = read_json(folder / self.network_part / "config.json")
        state = {k.removeprefix(PREFIX): v for k, v in state.items()}
        if any(k.startswith("double_blocks.") for k in state):
            state = bfl_to_diffusers(state, config["num_attention_heads"] * config["attention_head_dim"])
        with torch.device("meta"):
            network = FluxTransformer2DModel.from_config(config)
        missing, unexpected = network.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise NodeError(f"{path.name}: does not fit {folder.name}/{self.network_part}: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
        return network.to(dtype).eval()

    def matches_file(self, shapes: Any) -> bool:
        return any(k.startswith(PREFIX + "double_blocks.") for k in shapes)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        """An all-in-one checkpoint: the transformer configured by the first Flux folder whose shapes fit,
        the text encoders and the VAE by their part loaders (a part the file lacks is None)."""
        from ..part_files import InMemoryPart, _load_text_encoder, _load_vae, _shapes, _state
        from . import for_folder

        folders = [f for f in config_folders if (f / "model_index.json").is_file() and _family_is(for_folder, f, self)]
        shapes = _shapes(path)
        net_shapes = {k: v for k, v in shapes.items() if k.startswith(PREFIX)}
        tried = []
        for folder in folders:
            problem = self.network_file_mismatch(net_shapes, read_json(folder / self.network_part / "config.json"))
            if problem:
                tried.append(f"{folder.name} ({problem})")
                continue
            state = _state(path, dtype)
            parts = {name: {k.removeprefix(p): v for k, v in state.items() for p in prefixes if k.startswith(p)}
                     for name, prefixes in CHECKPOINT_PARTS.items()}
            own_first = [folder, *(f for f in config_folders if f != folder)]  # its own VAE scaling first
            encoders = {slot: _load_text_encoder(InMemoryPart(f"{path.name} ({slot})", parts[slot]), dtype,
                                                 own_first)
                        for slot in ("clip_l", "t5") if parts[slot]}
            vae = _load_vae(InMemoryPart(f"{path.name} (vae)", parts["vae"]), dtype, own_first) \
                if parts["vae"] else None
            network = self._network({k: v for k, v in state.items() if k.startswith(PREFIX)}, path, folder, dtype)
            return Parts(network=network, encoders=encoders, vae=vae,
                         scheduler_config=read_json(folder / "scheduler" / "scheduler_config.json"))
        raise NodeError(f"{path.name}: a Flux checkpoint that no Flux configuration fits; tried "
                        + (", ".join(tried) or "none"))

    # ---- model sampling -------------------------------------------------------------------------------
    def sampling_config(self, scheduler_config: dict) -> dict:
        """Dev's sampling in ComfyUI keeps a table of 10000 sigmas (its simple, beta, ... schedules index it);
        schnell's is the plain flow table of 1000, unshifted, as its diffusers config says."""
        if not scheduler_config.get("use_dynamic_shifting"):
            return scheduler_config
        return {"sigma_table_size": COMFY_TABLE, **scheduler_config}

    def pipeline_sigmas(self, steps: int) -> list[float]:
        """FluxPipeline's ``linspace(1, 1/steps, steps)``, shifted by the scheduler."""
        import numpy as np

        return np.linspace(1.0, 1.0 / steps, steps).tolist()

    # ---- text -----------------------------------------------------------------------------------------
    def encode(self, clip: Any, text: str, ctx: Any = None, **options: Any):
        """As ``FluxPipeline.encode_prompt``: T5's states (512 tokens) and CLIP-L's pooled output (77).
        ``texts`` gives each encoder its own prompt (``{"clip_l": ..., "t5": ...}``, the pipeline's prompt
        and prompt_2; CLIPTextEncodeFlux)."""
        from ..types import Conditioning

        texts = options.get("texts") or {}
        clip_l, t5 = self.encoder(clip, "clip_l"), self.encoder(clip, "t5")
        ids, _, dropped = window_ids(clip_l, texts.get("clip_l", text))
        with torch.inference_mode():
            pooled = clip_l.model(ids.to(clip.device), output_hidden_states=False).pooler_output
        pooled = pooled.to(dtype=clip_l.model.dtype, device=clip.device)
        states = encode_t5(t5, texts.get("t5", text), clip.device, T5_TOKENS)
        return Conditioning(states, text, pooled=pooled, extra={"dropped_tokens": dropped})

    # ---- denoiser -------------------------------------------------------------------------------------
    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        b, h, w = latent_shape[0], latent_shape[-2], latent_shape[-1]
        if h % 2 or w % 2:
            raise NodeError(f"{what}: Flux packs 2x2 latent patches, so the latent's sides must be even (image "
                            f"sides multiples of 16); got a {h}x{w} latent")
        config = model.network.config
        if cond.pooled is None or cond.embeds.shape[-1] != config.joint_attention_dim \
                or cond.pooled.shape[-1] != config.pooled_projection_dim:
            got = "no pooled embedding" if cond.pooled is None else \
                f"states of width {cond.embeds.shape[-1]} and a pooled embedding of {cond.pooled.shape[-1]}"
            raise NodeError(f"{what}: this Flux model takes T5 states of width {config.joint_attention_dim} and "
                            f"CLIP-L's pooled output of {config.pooled_projection_dim}; the conditioning has {got}: "
                            "encode the prompt with the model's own CLIP (clip_l + t5xxl, DualCLIPLoader type flux)")
        inputs = {"encoder_hidden_states": repeat_to(cond.embeds, b, what),
                  "pooled_projections": repeat_to(cond.pooled, b, what)}
        if config.guidance_embeds:
            guidance = float(cond.extra.get("guidance", DEFAULT_GUIDANCE))
            inputs["guidance"] = torch.full((b,), guidance, dtype=torch.float32)
        return inputs

    def network(self, model: Any):
        transformer = model.network
        position_ids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # one pair per latent size, not per step

        def call(x: torch.Tensor, t: torch.Tensor, **inputs: Any) -> torch.Tensor:
            inputs.pop("return_dict", None)
            b, c, h, w = x.shape
            tokens = inputs["encoder_hidden_states"].shape[1]
            key = (h, w, tokens, x.device, x.dtype)
            if key not in position_ids:
                position_ids[key] = (image_ids(h // 2, w // 2, x.device, x.dtype),
                                     torch.zeros(tokens, 3, device=x.device, dtype=x.dtype))
            img_ids, txt_ids = position_ids[key]
            out = transformer(hidden_states=pack(x), timestep=t.expand(b).to(x.dtype) / 1000, img_ids=img_ids,
                              txt_ids=txt_ids, return_dict=False, **inputs)[0]
            return unpack(out, h, w)

        return call


def _family_is(for_folder: Any, folder: Path, family: Family) -> bool:
    try:
        return for_folder(folder) is family
    except NodeError:
        return False


def pack(x: torch.Tensor) -> torch.Tensor:
    """[b, c, h, w] latents -> [b, h/2 * w/2, c * 4] tokens, each a 2x2 patch (channel-major)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack` for latents of ``h`` x ``w``."""
    b, _, d = tokens.shape
    c = d // 4
    return tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[rows * cols, 3] position ids of the image tokens: (0, row, column), row-major."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


# ---- Black Forest Labs' names -> diffusers' ---------------------------------------------------------------

#: one-to-one renames: BFL name -> diffusers name (".weight" / ".bias" follow); "{i}" is the block index
_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}


def bfl_to_diffusers(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """A Flux transformer's tensors from BFL's names to ``FluxTransformer2DModel``'s: fused q/k/v split,
    the single blocks' fused q/k/v/MLP input split at ``width`` (heads x head dim), and the final
    modulation's (shift, scale) halves swapped into diffusers' (scale, shift). Unknown names are kept, so
    the loader names them."""
    src = dict(state)
    out: dict[str, torch.Tensor] = {}

    def move(old: str, new: str) -> None:
        if old in src:
            out[new] = src.pop(old)

    for old, new in _TOP.items():
        for leaf in ("weight", "bias"):
            move(f"{old}.{leaf}", f"{new}.{leaf}")
    for leaf in ("weight", "bias"):
        key = f"final_layer.adaLN_modulation.1.{leaf}"
        if key in src:
            shift, scale = src.pop(key).chunk(2, dim=0)
            out[f"norm_out.linear.{leaf}"] = torch.cat([scale, shift])
    doubles = sorted({int(k.split(".")[1]) for k in src if k.startswith("double_blocks.")})
    for i in doubles:
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for old, new in _DOUBLE.items():
            for leaf in ("weight", "bias"):
                move(f"{b}.{old}.{leaf}", f"{d}.{new}.{leaf}")
        for old, new in _DOUBLE_NORMS.items():
            move(f"{b}.{old}", f"{d}.{new}")
        for stream, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for leaf in ("weight", "bias"):
                key = f"{b}.{stream}_attn.qkv.{leaf}"
                if key in src:
                    for name, part in zip(names, src.pop(key).chunk(3, dim=0), strict=True):
                        out[f"{d}.attn.{name}.{leaf}"] = part
    singles = sorted({int(k.split(".")[1]) for k in src if k.startswith("single_blocks.")})
    for i in singles:
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        for old, new in _SINGLE.items():
            for leaf in ("weight", "bias"):
                move(f"{b}.{old}.{leaf}", f"{d}.{new}.{leaf}")
        for old, new in _SINGLE_NORMS.items():
            move(f"{b}.{old}", f"{d}.{new}")
        for leaf in ("weight", "bias"):
            key = f"{b}.linear1.{leaf}"
            if key in src:
                fused = src.pop(key)
                parts = fused.split([width, width, width, fused.shape[0] - 3 * width], dim=0)
                for name, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts, strict=True):
                    out[f"{d}.{name}.{leaf}"] = part
    out.update(src)
    return out
