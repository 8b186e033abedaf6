"""Single-file Stable Diffusion 1.x checkpoints: writing them from a diffusers folder, and telling which
configuration a given file fits.

The original SD1.x layout ("LDM" names) keeps the UNet under ``model.diffusion_model.``, the VAE under
``first_stage_model.`` and the CLIP text encoder under ``cond_stage_model.transformer.``. diffusers reads that
layout with ``from_single_file`` (``diffusers.loaders.single_file_utils``); :func:`save_single_file` is its
inverse, so a diffusers folder and the file written from it load to the same weights.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise ValueError(f"unexpected UNet resnet parameter {rest!r}")


def unet_key_to_ldm(key: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str:
    """One diffusers ``UNet2DConditionModel`` parameter name -> its SD1.x name (without the prefix)."""
    n = layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             # SDXL's size / pooled-text embedding
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    head, _, leaf = key.rpartition(".")
    if head in fixed:
        return f"{fixed[head]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = 1 + b * n + j
        return f"input_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"input_blocks.{1 + int(m[1]) * n + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = b * n + j
        return f"output_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        b = int(m[1])
        slot = 2 if b in up_blocks_with_attention else 1
        return f"output_blocks.{b * n + layers_per_block}.{slot}.conv.{m[2]}"
    raise ValueError(f"no SD1.x name for UNet parameter {key!r}")


def vae_key_to_ldm(key: str, num_up_blocks: int) -> str:
    """One diffusers ``AutoencoderKL`` parameter name -> its SD1.x name (without the prefix)."""
    key = key.replace("conv_norm_out", "norm_out")

    def res(rest: str) -> str:
        return rest.replace("conv_shortcut", "nin_shortcut")

    def attn(rest: str) -> str:
        for new, old in _VAE_ATTN:
            if rest.startswith(new + "."):
                return old + rest[len(new):]
        raise ValueError(f"unexpected VAE attention parameter {rest!r}")

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{res(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}.{res(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{res(m[3])}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{attn(m[2])}"
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.\w+|(post_)?quant_conv\.\w+", key):
        return key
    raise ValueError(f"no SD1.x name for VAE parameter {key!r}")


def clip_key_to_ldm(key: str) -> str:
    """A transformers ``CLIPTextModel`` parameter name (nested or flattened) -> its SD1.x name."""
    return "transformer." + (key if key.startswith("text_model.") else "text_model." + key)


def _is_vae_attn_matrix(ldm_key: str) -> bool:
    return bool(re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key))


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    lpb = config.get("layers_per_block", 2)
    if not isinstance(lpb, int):
        raise ValueError("only UNets with one layers_per_block for all blocks have an SD1.x layout")
    with_attn = {int(m[1]) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    return {UNET_PREFIX + unet_key_to_ldm(k, lpb, with_attn): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n_up = len(config["up_block_types"])
    out = {}
    for k, v in state.items():
        ldm = vae_key_to_ldm(k, n_up)
        if _is_vae_attn_matrix(ldm) and v.ndim == 2:  # SD1.x keeps these as 1x1 convolutions
            v = v.reshape(*v.shape, 1, 1)
        out[VAE_PREFIX + ldm] = v
    return out


def clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"cond_stage_model." + clip_key_to_ldm(k): v for k, v in state.items() if not k.endswith("position_ids")}


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def save_single_file(diffusers_folder: str | Path, out_path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the UNet, VAE and text encoder of a diffusers SD1.x folder as one SD1.x ``.safetensors`` file."""
    folder = Path(diffusers_folder)
    state: dict[str, torch.Tensor] = {}
    state.update(unet_to_ldm(_read_weights(folder / "unet"), _read_config(folder / "unet")))
    state.update(vae_to_ldm(_read_weights(folder / "vae"), _read_config(folder / "vae")))
    state.update(clip_to_ldm(_read_weights(folder / "text_encoder")))
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    state = {k: v.contiguous() for k, v in state.items()}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt"})
    return out


# ---- which configuration fits a single file --------------------------------------------------------------

def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a ``.safetensors`` file, read from its header (no weights loaded)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@lru_cache(maxsize=8)
def _expected_shapes(config_folder: str, _stamp: float) -> dict[str, tuple[int, ...]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(config_folder)
    with torch.device("meta"):
        unet_cfg = UNet2DConditionModel.load_config(str(folder / "unet"))
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae_cfg = AutoencoderKL.load_config(str(folder / "vae"))
        vae = AutoencoderKL.from_config(vae_cfg)
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True))
    shapes: dict[str, tuple[int, ...]] = {}
    for state in (unet_to_ldm(unet.state_dict(), unet_cfg), vae_to_ldm(vae.state_dict(), vae_cfg),
                  clip_to_ldm(clip.state_dict())):
        shapes.update({k: tuple(v.shape) for k, v in state.items()})
    return shapes


@lru_cache(maxsize=8)
def _expected_unet_shapes(unet_folder: str, _stamp: float) -> dict[str, tuple[int, ...]]:
    from diffusers import UNet2DConditionModel

    return _unet_shapes_of(json.dumps(UNet2DConditionModel.load_config(unet_folder), sort_keys=True))


@lru_cache(maxsize=8)
def _unet_shapes_of(config_json: str) -> dict[str, tuple[int, ...]]:
    from diffusers import UNet2DConditionModel

    cfg = json.loads(config_json)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    return {k: tuple(v.shape) for k, v in unet_to_ldm(unet.state_dict(), cfg).items()}


def unet_file_mismatch(shapes: dict[str, tuple[int, ...]], config: dict) -> str:
    """Why a UNet file alone (original layout, with or without ``model.diffusion_model.``) does not fit the
    UNet ``config``; "" when it fits."""
    inner = {k.removeprefix(UNET_PREFIX): v for k, v in shapes.items()}
    if not any(k.startswith("input_blocks.") for k in inner):
        return "not a UNet in the original layout (no input_blocks)"
    want = _unet_shapes_of(json.dumps(dict(config), sort_keys=True))
    problems = []
    for key, shape in want.items():
        got = inner.get(key.removeprefix(UNET_PREFIX))
        if got != shape:
            problems.append(f"missing {key}" if got is None else f"{key}: {list(got)} (expected {list(shape)})")
        if len(problems) >= 3:
            break
    return "; ".join(problems)


def unet_file_source(path: str | Path):
    """What ``from_single_file`` reads for a UNet file: its path when its names carry the checkpoint
    prefix, else its tensors with the prefix added (UNet-alone files usually drop it; diffusers reads only
    prefixed names)."""
    if any(k.startswith(UNET_PREFIX) for k in checkpoint_shapes(path)):
        return str(path)
    return {UNET_PREFIX + k: v for k, v in load_file(str(path)).items()}


def unet_mismatches(shapes: dict[str, tuple[int, ...]], unet_folder: str | Path, limit: int = 3) -> list[str]:
    """What keeps a checkpoint's UNet (original layout) from loading with the UNet config in
    ``unet_folder``; [] when it fits. Other parts of the file are not looked at."""
    folder = Path(unet_folder).resolve()
    problems = []
    for key, shape in _expected_unet_shapes(str(folder), (folder / "config.json").stat().st_mtime).items():
        got = shapes.get(key)
        if got != shape:
            problems.append(f"missing {key}" if got is None else f"{key}: {list(got)} (expected {list(shape)})")
        if len(problems) >= limit:
            break
    return problems


def layout_mismatches(shapes: dict[str, tuple[int, ...]], config_folder: str | Path, limit: int = 3) -> list[str]:
    """What keeps a checkpoint (its tensor shapes) from loading with ``config_folder``; [] when it fits.

    The 1x1-convolution and matrix forms of the VAE's attention weights are both accepted.
    """
    folder = Path(config_folder).resolve()
    stamp = max((folder / s / "config.json").stat().st_mtime for s in ("unet", "vae", "text_encoder"))
    problems = []
    for key, shape in _expected_shapes(str(folder), stamp).items():
        got = shapes.get(key)
        if got is None:
            problems.append(f"missing {key}")
        elif got != shape and not (_is_vae_attn_matrix(key) and got[:2] == shape[:2]):
            problems.append(f"{key}: {list(got)} (expected {list(shape)})")
        if len(problems) >= limit:
            break
    return problems
