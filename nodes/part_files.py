"""Model parts kept alone, as ComfyUI users keep them: a diffusion model in ``diffusion_models/`` (or ``unet/``),
text encoders in ``text_encoders/`` (or ``clip/``), VAEs in ``vae/``, under any models folder.

A part is a diffusers component folder (``config.json`` + ``.safetensors``, as a diffusers repository holds
it) or one ``.safetensors`` file in the layout users download:

* diffusion model -- the original layout of its family (SD3's MMDiT ``joint_blocks``), loaded with diffusers'
  ``from_single_file`` and the configuration of the first config folder whose shapes fit;
* text encoder -- transformers' own key names (``clip_l.safetensors``, ``clip_g.safetensors``,
  ``t5xxl_*.safetensors``): CLIP (with or without its projection) or T5, built from the first fitting
  configuration; tokenizers come from that folder, T5's from the vocabulary the project ships;
* VAE -- the original (LDM) layout, or diffusers' names.

Config folders are the diffusers model folders in the models folders (so a model's own folder configures its
parts) and those shipped in ``models/configs``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from graph_runtime import NodeError, UnsafePathError, resolve_inside

if TYPE_CHECKING:  # listing and finding parts needs no torch; loading them does
    import torch

    from .families.base import TextEncoder


def read_json(path: Path) -> dict:
    from .families.base import read_json as read

    return read(path)

log = logging.getLogger(__name__)

#: part kind -> the ComfyUI folders that hold it (first: the current name, then older ones)
FOLDERS = {"network": ("diffusion_models", "unet"), "text_encoder": ("text_encoders", "clip"), "vae": ("vae",)}
T5_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "tokenizers" / "t5"


# ---- finding ------------------------------------------------------------------------------------------------

def _is_component_folder(p: Path) -> bool:
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def list_parts(kind: str, extra: Iterable[Path] = ()) -> list[str]:
    """The names (relative to their ComfyUI folder) of every loadable part of ``kind``."""
    from .models import model_dirs

    names: list[str] = []
    for root in model_dirs(extra):
        for sub in FOLDERS[kind]:
            base = root / sub
            if not base.is_dir():
                continue
            for p in sorted(base.rglob("*")):
                if any(part.startswith(".") for part in p.relative_to(base).parts):
                    continue
                hit = (p.is_file() and p.suffix.lower() == ".safetensors" and not _is_component_folder(p.parent)) \
                    or (p.is_dir() and _is_component_folder(p))
                name = p.relative_to(base).as_posix()
                if hit and name not in names:
                    names.append(name)
    return names


def find_part(kind: str, name: str, what: str, extra: Iterable[Path] = ()) -> Path:
    """The path of part ``name`` (confined to its ComfyUI folders); NodeError naming the input otherwise."""
    from .models import model_dirs

    for root in model_dirs(extra):
        for sub in FOLDERS[kind]:
            if not (root / sub).is_dir():
                continue
            try:
                p = resolve_inside(root / sub, name)
            except UnsafePathError as exc:
                raise NodeError(f"{what}: {exc}") from exc
            if p.exists():
                return p
    folders = " or ".join(f"{s}/" for s in FOLDERS[kind])
    raise NodeError(f"{what}: {name!r} not found in the {folders} folder of any models folder")


def config_folders(extra: Iterable[Path] = ()) -> list[Path]:
    """Diffusers model folders to configure single files with: those in the models folders, then the
    shipped ones."""
    from .models import CONFIGS_DIR, is_model_folder, model_dirs

    out: list[Path] = []
    for root in [*model_dirs(extra), CONFIGS_DIR]:
        for p in sorted(root.glob("*")) + sorted(root.glob("*/*")):
            if p.is_dir() and (p / "model_index.json").is_file() and (is_model_folder(p) or root == CONFIGS_DIR):
                if p not in out:
                    out.append(p)
    return out


# ---- loading ------------------------------------------------------------------------------------------------

def load_part(kind: str, path: Path, device: torch.device, dtype: torch.dtype, name: str,
              candidates: Iterable[Path]):
    """One part as a LoadedModel with only that part set (see ModelStore.load)."""
    from .model_store import LoadedModel, bundle, move
    from .types import VAEBundle

    candidates = list(candidates)
    if kind == "network":
        network, family, scheduler_config = _load_network(path, dtype, candidates)
        from .families.base import Parts

        return bundle(Parts(network=network, scheduler_config=scheduler_config), family, device, dtype, name,
                      str(path))
    if kind == "text_encoder":
        enc = _load_text_encoder(path, dtype, candidates)
        move([enc.model], device)
        return LoadedModel(None, None, None, encoder=enc, name=name)
    if kind == "vae":
        vae = _load_vae(path, dtype, candidates)
        move([vae], device)
        cfg = vae.config
        return LoadedModel(None, None, VAEBundle(vae=vae, scaling_factor=float(cfg.scaling_factor), device=device,
                                                 dtype=dtype, name=name,
                                                 shift_factor=float(getattr(cfg, "shift_factor", None) or 0.0)),
                           name=name)
    raise ValueError(f"unknown part kind {kind!r}")


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from .checkpoint import checkpoint_shapes

    try:
        return checkpoint_shapes(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise NodeError(f"cannot read {path.name}: not a valid .safetensors file ({exc})") from exc


def _state(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A file's tensors in ``dtype`` (fp8 and other storage types are computed in the loader's dtype)."""
    from safetensors.torch import load_file

    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}


def _component_class(folder: Path):
    import importlib

    cfg = read_json(folder / "config.json")
    class_name = cfg.get("_class_name") or (cfg.get("architectures") or [None])[0]
    for library in ("diffusers", "transformers"):
        cls = getattr(importlib.import_module(library), str(class_name), None)
        if cls is not None:
            return cls, cfg
    raise NodeError(f"{folder.name}: config.json names {class_name!r}, which neither diffusers nor "
                    "transformers has")


def _load_network(path: Path, dtype: torch.dtype, candidates: list[Path]):
    from . import families

    if path.is_dir():
        cls, cfg = _component_class(path)
        family = families.for_network_config(cfg)
        try:
            network = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True, use_safetensors=True,
                                          low_cpu_mem_usage=False)
        except (OSError, ValueError) as exc:
            raise NodeError(f"cannot load {path.name}: {exc}") from exc
        return network, family, dict(family.default_scheduler)
    shapes = _shapes(path)
    tried = []
    for folder in candidates:
        try:
            family = families.for_folder(folder)
        except NodeError:
            continue
        sub = folder / family.network_part
        if not (sub / "config.json").is_file():
            continue
        problem = family.network_file_mismatch(shapes, read_json(sub / "config.json"))
        if problem:
            if not problem.startswith("not "):  # another layout altogether says nothing about this folder
                tried.append(f"{folder.name} ({problem})")
            continue
        cls, _ = _component_class(sub)
        try:
            network = cls.from_single_file(family.network_file_source(path), config=str(folder),
                                           subfolder=family.network_part,
                                           torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            tried.append(f"{folder.name} ({exc})")
            continue
        sched = folder / "scheduler" / "scheduler_config.json"
        return network, family, read_json(sched) if sched.is_file() else dict(family.default_scheduler)
    from .families.recognise import describe

    raise NodeError(f"{path.name}: {describe(shapes)}; no configuration fits it"
                    + (f" (tried {', '.join(tried)})" if tried else ""))


def _text_encoder_kind(shapes: dict[str, tuple[int, ...]]) -> str | None:
    if any(k.startswith("text_model.encoder.layers.") for k in shapes):
        return "clip_projection" if "text_projection.weight" in shapes else "clip"
    if "shared.weight" in shapes and any(k.startswith("encoder.block.") for k in shapes):
        return "t5"
    return None


def _encoder_configs(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for sub in sorted(folder.glob("text_encoder*")):
        if (sub / "config.json").is_file():
            out.append((sub, read_json(sub / "config.json")))
    return out


def _config_fits(kind: str, shapes: dict, cfg: dict) -> bool:
    if kind.startswith("clip"):
        layers = {int(k.split(".")[3]) for k in shapes if k.startswith("text_model.encoder.layers.")}
        vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
        proj = shapes.get("text_projection.weight")
        has_proj = "WithProjection" in str((cfg.get("architectures") or [""])[0])
        return (cfg.get("model_type") == "clip_text_model" and cfg.get("hidden_size") == hidden
                and cfg.get("vocab_size") == vocab and cfg.get("num_hidden_layers") == len(layers)
                and has_proj == (proj is not None)
                and (proj is None or cfg.get("projection_dim") == proj[0]))
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.block.")}
    vocab, d_model = shapes["shared.weight"]
    return (cfg.get("model_type") == "t5" and cfg.get("d_model") == d_model and cfg.get("vocab_size") == vocab
            and cfg.get("num_layers") == len(layers))


def _load_text_encoder(path: Path, dtype: torch.dtype, candidates: list[Path]) -> TextEncoder:
    import torch
    import transformers

    from .families.base import TextEncoder

    if path.is_dir():
        cls, cfg = _component_class(path)
        model = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        return TextEncoder(_tokenizer_for(path.parent, path.name, cfg), model)
    shapes = _shapes(path)
    kind = _text_encoder_kind(shapes)
    if kind is None:
        from .families.recognise import describe

        raise NodeError(f"{path.name}: {describe(shapes)}, not a text encoder (CLIP or T5 with transformers' "
                        "key names)")
    for folder in candidates:
        for sub, cfg in _encoder_configs(folder):
            if not _config_fits(kind, shapes, cfg):
                continue
            arch = (cfg.get("architectures") or [None])[0]
            cls = getattr(transformers, str(arch), None) or {
                "clip": transformers.CLIPTextModel, "clip_projection": transformers.CLIPTextModelWithProjection,
                "t5": transformers.T5EncoderModel}[kind]
            config = cls.config_class.from_pretrained(str(sub))
            with torch.device("meta"):
                model = cls(config)
            state = _state(path, dtype)
            missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
            missing = [k for k in missing if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"]
            if missing or unexpected:
                raise NodeError(f"{path.name}: does not fit {folder.name}/{sub.name}: missing "
                                f"{missing[:3]}, unexpected {unexpected[:3]}")
            if kind == "t5":
                model.tie_weights()
            _materialise(model, dtype)
            return TextEncoder(_tokenizer_for(folder, sub.name, cfg, kind), model.to(dtype).eval())
    raise NodeError(f"{path.name}: a {kind.replace('_', ' with ')} text encoder ({len(shapes)} tensors) that no "
                    "configuration fits; put its model's diffusers folder (or config) in a models folder")


def _materialise(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Buffers a file does not hold (position ids) built on the CPU instead of the meta device."""
    import torch

    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            leaf = name.rpartition(".")[2]
            if leaf == "position_ids":
                owner.register_buffer(leaf, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
            else:
                owner.register_buffer(leaf, torch.zeros(buf.shape, dtype=buf.dtype), persistent=False)


def _tokenizer_for(folder: Path, encoder_sub: str, cfg: dict, kind: str | None = None):
    """The tokenizer that goes with text encoder ``encoder_sub`` of ``folder`` (text_encoder_2 ->
    tokenizer_2); T5's shipped vocabulary when the folder has none."""
    import transformers

    suffix = encoder_sub[len("text_encoder"):] if encoder_sub.startswith("text_encoder") else ""
    tok_dir = folder / f"tokenizer{suffix}"
    is_t5 = kind == "t5" or cfg.get("model_type") == "t5"
    if tok_dir.is_dir():
        return transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if is_t5:
        return transformers.T5TokenizerFast.from_pretrained(str(T5_TOKENIZER))
    raise NodeError(f"{folder.name}: no tokenizer{suffix}/ folder for its {encoder_sub}")


def _vae_candidates(path: Path, latent_channels: int, candidates: list[Path]) -> list[Path]:
    """Config folders for a VAE file, those of the family its name suggests first.

    SD1.x/SD2.x and SDXL VAEs are the same network with different latent scales (0.18215, 0.13025), which
    the file does not hold; ComfyUI's VAE takes the scale from the model it is used with. Here a VAE's
    scale travels with it, so a 4-channel file takes SDXL's when its name says so (``sdxl_vae``,
    ``xlVAE``...), else SD1.x's (``vae-ft-mse-840000``...)."""
    if latent_channels != 4:
        return candidates
    import re

    from . import families

    want = "sdxl" if re.search(r"sdxl|(?<![a-z])xl", path.name.lower()) else "sd1"

    def family(folder: Path) -> str:
        try:
            return families.for_folder(folder).name
        except NodeError:
            return ""

    return sorted(candidates, key=lambda folder: family(folder).replace("sd2", "sd1") != want)


def _load_vae(path: Path, dtype: torch.dtype, candidates: list[Path]):
    from diffusers import AutoencoderKL

    if path.is_dir():
        return AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True,
                                             low_cpu_mem_usage=False)
    shapes = _shapes(path)
    conv = shapes.get("decoder.conv_in.weight")
    if conv is None:
        from .families.recognise import describe

        raise NodeError(f"{path.name}: {describe(shapes)}, not a VAE")
    latent = conv[1]
    ldm = any(k.startswith("encoder.down.") for k in shapes)
    for folder in _vae_candidates(path, latent, candidates):
        cfg_path = folder / "vae" / "config.json"
        if not cfg_path.is_file():
            continue
        cfg = read_json(cfg_path)
        if cfg.get("latent_channels") != latent or cfg.get("block_out_channels", [None])[-1] != conv[0]:
            continue
        try:
            if ldm:
                vae = AutoencoderKL.from_single_file(str(path), config=str(folder), subfolder="vae",
                                                     torch_dtype=dtype, local_files_only=True,
                                                     low_cpu_mem_usage=False)
                # diffusers' conversion keeps its own default scale; the config folder's is the one meant
                vae.register_to_config(**{k: cfg[k] for k in ("scaling_factor", "shift_factor") if k in cfg})
                return vae
            vae = AutoencoderKL.from_config(cfg)
            vae.load_state_dict(_state(path, dtype))
            return vae.to(dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.info("%s does not fit %s: %s", path.name, folder.name, exc)
    raise NodeError(f"{path.name}: a VAE with {latent} latent channels that no configuration fits")

