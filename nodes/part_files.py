"""Model parts kept alone, as ComfyUI users keep them: a diffusion model in ``diffusion_models/`` (or ``unet/``),
text encoders in ``text_encoders/`` (or ``clip/``), VAEs in ``vae/``, LoRAs in ``loras/`` and upscale models in
``upscale_models/`` (these two read by :mod:`nodes.lora` and :mod:`nodes.upscale_models`), under any models
folder.

A part is a diffusers component folder (``config.json`` + ``.safetensors``, as a diffusers repository holds
it) or one ``.safetensors`` file in the layout users download:

* diffusion model -- the original layout of its family (SD3's MMDiT ``joint_blocks``), loaded with diffusers'
  ``from_single_file`` and the configuration of the first config folder whose shapes fit;
* text encoder -- transformers' own key names (``clip_l.safetensors``, ``clip_g.safetensors``,
  ``t5xxl_*.safetensors``; ``qwen_3_4b.safetensors`` as Qwen3ForCausalLM names it, ``model.`` prefix and
  tied head optional): CLIP (with or without its projection), T5 or Qwen3, built from the first fitting
  configuration; tokenizers come from that folder, T5's and Qwen3's from the vocabularies the project ships;
* VAE -- the original (LDM) layout, or diffusers' names.

Config folders are the diffusers model folders in the models folders (so a model's own folder configures its
parts) and those shipped in ``models/configs``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
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
FOLDERS = {"network": ("diffusion_models", "unet"), "text_encoder": ("text_encoders", "clip"), "vae": ("vae",),
           "lora": ("loras",), "upscale_model": ("upscale_models",), "controlnet": ("controlnet",)}
T5_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "tokenizers" / "t5"
QWEN3_TOKENIZER = T5_TOKENIZER.parent / "qwen3"
#: a text encoder kind -> the vocabulary the project ships for its files (they hold weights only)
SHIPPED_TOKENIZERS = {"t5": T5_TOKENIZER, "qwen3": QWEN3_TOKENIZER, "qwen25vl": QWEN3_TOKENIZER}
#: transformers model types of component folders -> the kinds single files are told apart by
MODEL_TYPE_KINDS = {"clip_text_model": "clip", "t5": "t5", "qwen3": "qwen3", "qwen2_5_vl": "qwen25vl"}


# ---- finding ------------------------------------------------------------------------------------------------

def _is_component_folder(p: Path) -> bool:
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def list_parts(kind: str, extra: Iterable[Path] = (), suffixes: tuple[str, ...] = (".safetensors",)) -> list[str]:
    """The names (relative to their ComfyUI folder) of every loadable part of ``kind``: files ending in one of
    ``suffixes`` and diffusers component folders. A loader that refuses pickle files by name lists them too
    (``suffixes``), so a workflow naming one gets that loader's explanation rather than "not in list"."""
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
                hit = (p.is_file() and p.suffix.lower() in suffixes and not _is_component_folder(p.parent)) \
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
    if kind == "controlnet":
        from .controlnet import load_controlnet

        return LoadedModel(None, None, None, name=name, controlnet=load_controlnet(path, device, dtype, name))
    raise ValueError(f"unknown part kind {kind!r}")


@dataclass(frozen=True, eq=False)
class InMemoryPart:
    """One part's tensors already read (e.g. the text encoder of an all-in-one checkpoint), so the part
    loaders take it where they take a file; ``name`` names it in messages."""

    name: str
    tensors: dict

    def is_dir(self) -> bool:
        return False


def _shapes(path: Path | InMemoryPart) -> dict[str, tuple[int, ...]]:
    from .checkpoint import checkpoint_shapes

    if isinstance(path, InMemoryPart):
        return {k: tuple(v.shape) for k, v in path.tensors.items()}
    try:
        return checkpoint_shapes(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise NodeError(f"cannot read {path.name}: not a valid .safetensors file ({exc})") from exc


def _state(path: Path | InMemoryPart, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A file's tensors in ``dtype`` (fp8 and other storage types are computed in the loader's dtype)."""
    from safetensors.torch import load_file

    tensors = _dequantized(path.tensors if isinstance(path, InMemoryPart) else load_file(str(path)))
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}


#: what ComfyUI's scaled-fp8 files keep beside each fp8 weight: its scale (older ``scale_weight``, newer
#: ``weight_scale``), and keys that only matter to fp8 matmuls
_SCALES = (".scale_weight", ".weight_scale")
_FP8_EXTRAS = (".scale_input", ".input_scale", ".comfy_quant")


def _dequantized(tensors: dict) -> dict:
    """Scaled fp8 weights (``*_fp8_scaled.safetensors``) as the values they stand for: ``weight * scale``
    (a scalar, or one scale per output row), in float32; their scale and fp8-only keys dropped."""
    import torch

    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    if not any(k.endswith(_SCALES) for k in tensors):
        return tensors
    out = dict(tensors)
    for key in [k for k in tensors if k.endswith(_SCALES)]:
        base = key.rsplit(".", 1)[0] + ".weight"
        weight = out.get(base)
        if weight is None or weight.dtype not in fp8:
            continue
        scale = out.pop(key).to(torch.float32)
        if scale.numel() > 1:
            scale = scale.reshape(-1, *([1] * (weight.ndim - 1)))
        out[base] = weight.to(torch.float32) * scale
    for key in [k for k in out if k.endswith(_FP8_EXTRAS) or k == "scaled_fp8"]:
        del out[key]
    return out


def component_class(folder: Path):
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
        cls, cfg = component_class(path)
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
            tried.append(f"{folder.name} ({problem})")
            continue
        try:
            network = family.load_network_file(path, folder, dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            tried.append(f"{folder.name} ({exc})")
            continue
        sched = folder / "scheduler" / "scheduler_config.json"
        return network, family, read_json(sched) if sched.is_file() else dict(family.default_scheduler)
    from .families.recognise import describe

    raise NodeError(f"{path.name}: {describe(shapes)}; no configuration fits it"
                    + (f" (tried {', '.join(tried)})" if tried else ""))


def text_encoder_kind(path: Path) -> str | None:
    """What a text encoder part is, from its tensor names alone: "clip", "clip_projection", "t5", "qwen3",
    or None (not a text encoder file this runtime reads; a component folder is read by its config)."""
    if path.is_dir():
        model_type = read_json(path / "config.json").get("model_type", "") if (path / "config.json").is_file() else ""
        return MODEL_TYPE_KINDS.get(model_type, model_type or None)
    return _text_encoder_kind(_shapes(path))


def _text_encoder_kind(shapes: dict[str, tuple[int, ...]]) -> str | None:
    if any(k.startswith("text_model.encoder.layers.") for k in shapes):
        return "clip_projection" if "text_projection.weight" in shapes else "clip"
    if "shared.weight" in shapes and any(k.startswith("encoder.block.") for k in shapes):
        return "t5"
    if any(".merger." in k and "visual." in k for k in shapes) and _vl_text_names(shapes):
        return "qwen25vl"  # Qwen2.5-VL: a vision tower beside the language model (Qwen-Image's encoder)
    inner = _decoder_names(shapes)
    if "embed_tokens.weight" in inner and "layers.0.self_attn.q_norm.weight" in inner:
        return "qwen3"  # Qwen3 normalises queries and keys per head; Qwen2.x and Llama do not
    return None


def _vl_text_names(shapes: dict) -> dict:
    """The language model's tensors of a Qwen2.5-VL file, under Qwen2 names (``model.layers...`` as the
    original checkpoint keeps them, or ``model.language_model.layers...`` as transformers 5 saves them)."""
    out = {}
    for k, v in shapes.items():
        for prefix in ("model.language_model.", "model."):
            if k.startswith(prefix) and not k.startswith("model.visual."):
                out[k[len(prefix):]] = v
                break
    return out if "embed_tokens.weight" in out else {}


def _decoder_names(shapes: dict) -> dict:
    """A decoder-only language model's tensors under Qwen3Model's names: Qwen3ForCausalLM's ``model.``
    prefix dropped, its output head (tied to the embeddings, unused for text states) left out."""
    return {k.removeprefix("model."): v for k, v in shapes.items() if k != "lm_head.weight"}


def _encoder_configs(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for sub in sorted(folder.glob("text_encoder*")):
        if (sub / "config.json").is_file():
            out.append((sub, read_json(sub / "config.json")))
    return out


def _has_projection(cfg: dict) -> bool:
    return "WithProjection" in str((cfg.get("architectures") or [""])[0])


def _config_fits(kind: str, shapes: dict, cfg: dict) -> bool:
    if kind.startswith("clip"):
        layers = {int(k.split(".")[3]) for k in shapes if k.startswith("text_model.encoder.layers.")}
        vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
        proj = shapes.get("text_projection.weight")
        has_proj = _has_projection(cfg)
        return (cfg.get("model_type") == "clip_text_model" and cfg.get("hidden_size") == hidden
                and cfg.get("vocab_size") == vocab and cfg.get("num_hidden_layers") == len(layers)
                and (has_proj == (proj is not None) or not has_proj)  # a plain CLIP ignores a projection
                and (proj is None or cfg.get("projection_dim") == proj[0]))
    if kind == "qwen25vl":
        inner, text = _vl_text_names(shapes), cfg.get("text_config") or cfg
        vocab, hidden = inner["embed_tokens.weight"]
        layers = {int(k.split(".")[1]) for k in inner if k.startswith("layers.")}
        heads = text.get("num_attention_heads", 1)
        return (cfg.get("model_type") == "qwen2_5_vl" and text.get("hidden_size") == hidden
                and text.get("vocab_size", cfg.get("vocab_size")) == vocab
                and text.get("num_hidden_layers") == len(layers)
                and text.get("num_key_value_heads", 0) * (hidden // heads)
                == inner["layers.0.self_attn.k_proj.weight"][0])
    if kind == "qwen3":
        inner = _decoder_names(shapes)
        vocab, hidden = inner["embed_tokens.weight"]
        head = inner["layers.0.self_attn.q_norm.weight"][0]
        layers = {int(k.split(".")[1]) for k in inner if k.startswith("layers.")}
        return (cfg.get("model_type") == "qwen3" and cfg.get("hidden_size") == hidden
                and cfg.get("vocab_size") == vocab and cfg.get("num_hidden_layers") == len(layers)
                and cfg.get("head_dim", hidden // cfg.get("num_attention_heads", 1)) == head
                and cfg.get("num_attention_heads", 0) * head == inner["layers.0.self_attn.q_proj.weight"][0]
                and cfg.get("num_key_value_heads", 0) * head == inner["layers.0.self_attn.k_proj.weight"][0]
                and cfg.get("intermediate_size") == inner["layers.0.mlp.gate_proj.weight"][0])
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.block.")}
    vocab, d_model = shapes["shared.weight"]
    return (cfg.get("model_type") == "t5" and cfg.get("d_model") == d_model and cfg.get("vocab_size") == vocab
            and cfg.get("num_layers") == len(layers))


def _load_text_encoder(path: Path, dtype: torch.dtype, candidates: list[Path]) -> TextEncoder:
    import torch
    import transformers

    from .families.base import TextEncoder

    if path.is_dir():
        cls, cfg = component_class(path)
        model = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        return TextEncoder(_tokenizer_for(path.parent, path.name, cfg), model)
    shapes = _shapes(path)
    kind = _text_encoder_kind(shapes)
    if kind is None:
        from .families.recognise import describe

        raise NodeError(f"{path.name}: {describe(shapes)}, not a text encoder (CLIP, T5, Qwen3 or Qwen2.5-VL "
                        "with transformers' key names)")
    fitting = [(folder, sub, cfg) for folder in candidates for sub, cfg in _encoder_configs(folder)
               if _config_fits(kind, shapes, cfg)]
    # a config of the file's own kind first (a CLIP with its projection), then a plain CLIP that ignores it
    fitting.sort(key=lambda fsc: (kind == "clip_projection") != _has_projection(fsc[2]))
    if not fitting:
        raise NodeError(f"{path.name}: a {kind.replace('_', ' with ')} text encoder ({len(shapes)} tensors) that no "
                        "configuration fits; put its model's diffusers folder (or config) in a models folder")
    folder, sub, cfg = fitting[0]
    if kind == "qwen25vl":  # transformers' own loading: legacy key names, rotary buffers, tied head
        cls = transformers.Qwen2_5_VLForConditionalGeneration
        model = cls.from_pretrained(None, config=cls.config_class.from_pretrained(str(sub)),
                                    state_dict=_state(path, dtype), torch_dtype=dtype)
        return TextEncoder(_tokenizer_for(folder, sub.name, cfg, kind), model.eval())
    arch = (cfg.get("architectures") or [None])[0]
    cls = getattr(transformers, str(arch), None) or {
        "clip": transformers.CLIPTextModel, "clip_projection": transformers.CLIPTextModelWithProjection,
        "t5": transformers.T5EncoderModel, "qwen3": transformers.Qwen3Model}[kind]
    if kind == "qwen3" and "CausalLM" in cls.__name__:
        cls = transformers.Qwen3Model  # the text states are the base model's; the head is not read
    config = cls.config_class.from_pretrained(str(sub))
    with torch.device("meta"):
        model = cls(config)
    state = _state(path, dtype)
    state = _decoder_names(state) if kind == "qwen3" else _own_names(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"]
    if missing or unexpected:
        raise NodeError(f"{path.name}: does not fit {folder.name}/{sub.name}: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]}")
    if kind == "t5":
        model.tie_weights()
    _materialise(model, dtype)
    return TextEncoder(_tokenizer_for(folder, sub.name, cfg, kind), model.to(dtype).eval())


def _own_names(state: dict, model) -> dict:
    """A CLIP file's names as ``model`` names them: transformers' newer CLIPTextModel has no ``text_model.``
    level, and a plain CLIPTextModel no ``text_projection`` (which clip_l files often carry); position ids
    that older files keep are dropped where the model does not load them."""
    own = model.state_dict().keys()
    out = state if any(k.startswith("text_model.") for k in own) else \
        {k.removeprefix("text_model."): v for k, v in state.items()}
    # position ids are rebuilt, not loaded (older files keep them); a plain CLIP has no projection
    return {k: v for k, v in out.items() if k in own or not k.endswith(("position_ids", "text_projection.weight"))}


def _materialise(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Buffers a file does not hold (position ids) built on the CPU instead of the meta device."""
    import torch

    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            leaf = name.rpartition(".")[2]
            if leaf in ("inv_freq", "original_inv_freq") and hasattr(owner, "config"):
                with torch.device("cpu"):  # rotary frequencies: computed from the config, as the model does
                    fresh = type(owner)(owner.config)
                owner.register_buffer(leaf, getattr(fresh, leaf), persistent=False)
            elif leaf == "position_ids":
                owner.register_buffer(leaf, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
            else:
                owner.register_buffer(leaf, torch.zeros(buf.shape, dtype=buf.dtype), persistent=False)


def _tokenizer_for(folder: Path, encoder_sub: str, cfg: dict, kind: str | None = None):
    """The tokenizer that goes with text encoder ``encoder_sub`` of ``folder`` (text_encoder_2 ->
    tokenizer_2); the vocabulary the project ships for T5 or Qwen3 when the folder has none."""
    import transformers

    suffix = encoder_sub[len("text_encoder"):] if encoder_sub.startswith("text_encoder") else ""
    tok_dir = folder / f"tokenizer{suffix}"
    if tok_dir.is_dir():
        return transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    shipped = SHIPPED_TOKENIZERS.get(kind or cfg.get("model_type", ""))
    if shipped is not None:
        return _shipped_tokenizer(shipped)
    raise NodeError(f"{folder.name}: no tokenizer{suffix}/ folder for its {encoder_sub}")


@functools.cache
def _shipped_tokenizer(folder: Path):
    """A shipped vocabulary, read once per process (building Qwen3's fast tokenizer takes seconds); the
    tokenizers are only called, never changed."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _load_vae(path: Path, dtype: torch.dtype, candidates: list[Path]):
    from diffusers import AutoencoderKL

    if path.is_dir():
        if read_json(path / "config.json").get("_class_name") == "AutoencoderKLQwenImage":
            from diffusers import AutoencoderKLQwenImage

            from .families.qwen_image import FrameVAE

            return FrameVAE(AutoencoderKLQwenImage.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True,
                                                                   low_cpu_mem_usage=False))
        return AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True,
                                             low_cpu_mem_usage=False)
    shapes = _shapes(path)
    if len(shapes.get("decoder.conv1.weight", shapes.get("decoder.conv_in.weight", ()))) == 5:
        return _load_frame_vae(path, shapes, dtype, candidates)
    conv = shapes.get("decoder.conv_in.weight")
    if conv is None:
        from .families.recognise import describe

        raise NodeError(f"{path.name}: {describe(shapes)}, not a VAE")
    latent = conv[1]
    ldm = any(k.startswith("encoder.down.") for k in shapes)
    for folder in candidates:
        cfg_path = folder / "vae" / "config.json"
        if not cfg_path.is_file():
            continue
        cfg = read_json(cfg_path)
        if cfg.get("latent_channels") != latent or cfg.get("block_out_channels", [None])[-1] != conv[0]:
            continue
        try:
            if ldm:
                source = path.tensors if isinstance(path, InMemoryPart) else str(path)
                return AutoencoderKL.from_single_file(source, config=str(folder), subfolder="vae",
                                                      torch_dtype=dtype, local_files_only=True,
                                                      low_cpu_mem_usage=False)
            vae = AutoencoderKL.from_config(cfg)
            vae.load_state_dict(_state(path, dtype))
            return vae.to(dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.info("%s does not fit %s: %s", path.name, folder.name, exc)
    raise NodeError(f"{path.name}: a VAE with {latent} latent channels that no configuration fits")



def _load_frame_vae(path: Path, shapes: dict, dtype: torch.dtype, candidates: list[Path]):
    """A causal 3-D VAE file (Qwen-Image's, Wan 2.1's layout: ``encoder.conv1``, ``decoder.upsamples``; or
    diffusers' names), as :class:`nodes.families.qwen_image.FrameVAE`, from the first config whose base width
    and latent channels fit."""
    from diffusers import AutoencoderKLQwenImage
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from .families.qwen_image import FrameVAE

    original = "decoder.conv1.weight" in shapes
    base = shapes["encoder.conv1.weight" if original else "encoder.conv_in.weight"][0]
    z_dim = shapes["conv2.weight" if original else "post_quant_conv.weight"][0]
    for folder in candidates:
        cfg_path = folder / "vae" / "config.json"
        if not cfg_path.is_file():
            continue
        cfg = read_json(cfg_path)
        if cfg.get("_class_name") != "AutoencoderKLQwenImage" or (cfg.get("base_dim"), cfg.get("z_dim")) != (base, z_dim):
            continue
        state = _state(path, dtype)
        vae = AutoencoderKLQwenImage.from_config(cfg)
        try:
            vae.load_state_dict(convert_wan_vae_to_diffusers(state) if original else state)
        except RuntimeError as exc:
            log.info("%s does not fit %s: %s", path.name, folder.name, exc)
            continue
        return FrameVAE(vae.to(dtype))
    raise NodeError(f"{path.name}: a 3-D (Qwen-Image / Wan) VAE of base width {base} and {z_dim} latent channels "
                    "that no configuration fits")
