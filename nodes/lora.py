"""LoRA: ComfyUI's LoraLoader and LoraLoaderModelOnly, with diffusers' own LoRA loading (the peft backend).

A LoRA file (``loras/`` in any models folder) is read the way ``pipe.load_lora_weights`` reads it -- kohya's
layout (``lora_unet_*``, ``lora_te_*`` / ``lora_te1_*`` / ``lora_te2_*``, with ``.alpha``), diffusers' and
peft's (``unet.*`` / ``text_encoder.*``, ``lora_A`` / ``lora_B``) -- and ComfyUI's own layout
(``diffusion_model.<original UNet name>``, ``text_encoders.<clip_l|clip_g>.transformer.*``, and kohya names
over original UNet names), which is first renamed to kohya's from the network's own module names. The image
then equals diffusers' pipeline with the same LoRA loaded.

The base model is never reloaded or changed: each file becomes one peft adapter on the shared network and text
encoders (loaded once per file and module, see :class:`Adapter`), and a MODEL or CLIP value carries the
(adapter, strength) pairs it wants. The sampler and the text encoder switch on exactly those (:func:`applied`)
before they run, and switch adapters off for a value that has none, so the base branch of a graph gives the
base image bit for bit. An adapter no value holds any more is deleted from its module; once none is left the
peft layers are taken out again, leaving the module as it was loaded.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .conditioning import check_clip
from .model_store import PICKLE_SUFFIXES, file_identity, refuse_pickle
from .part_files import find_part, list_parts
from .sampling import _check_model
from .types import ModelBundle, TextEncoderBundle

log = logging.getLogger(__name__)

STRENGTH_LIMIT = 100.0
#: the diffusers LoRA loader (its state-dict reading and conversion) of each family
_LOADERS = {"sd1": "StableDiffusionLoraLoaderMixin", "sd2": "StableDiffusionLoraLoaderMixin",
            "sdxl": "StableDiffusionXLLoraLoaderMixin", "sd3": "SD3LoraLoaderMixin"}
#: kohya's prefix of each text-encoder component
_KOHYA_TE = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
#: ComfyUI's LoRA tensor suffixes -> kohya's (peft's A / B are kohya's down / up)
_SUFFIXES = {".lora_up.weight": ".lora_up.weight", ".lora_down.weight": ".lora_down.weight", ".alpha": ".alpha",
             ".lora_B.weight": ".lora_up.weight", ".lora_A.weight": ".lora_down.weight"}
_LDM_UNET = re.compile(r"lora_unet_(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)_")


# ---- adapters on shared modules -----------------------------------------------------------------------------

@dataclass(eq=False)
class Adapter:
    """One LoRA file loaded as the peft adapter ``name`` into ``module`` (a network or a text encoder).

    MODEL / CLIP values hold it; when the last one is gone, the adapter is deleted from the module (at once if
    the module is idle, else at its next use)."""

    name: str
    module: Any
    file: str
    component: str
    _finalizer: Any = field(default=None, repr=False)


class _Slot:
    """What this runtime has put on one module: its adapters (weakly), the state last switched on, a lock that
    every change and every run of the module holds, and how many runs are under way in it (a run may start
    another inside it, in the same thread)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.adapters: dict[str, weakref.ref] = {}
        self.state: tuple | None = None  # (name, strength) pairs switched on; () = adapters off; None = unknown
        self.busy = 0

    def sweep(self, module: Any) -> None:
        """Delete the adapters no value holds any more; with none left, take the peft layers out. Never while
        the module runs (a freed adapter then goes at the next sweep)."""
        dead = [n for n, ref in self.adapters.items() if ref() is None]
        if not dead or self.busy:
            return
        from diffusers.utils.peft_utils import delete_adapter_layers, recurse_remove_peft_layers

        for name in dead:
            del self.adapters[name]
            if not self.adapters:
                break
            delete_adapter_layers(module, name)
            getattr(module, "peft_config", {}).pop(name, None)
            self.state = None
        if not self.adapters:
            recurse_remove_peft_layers(module)
            if hasattr(module, "peft_config"):
                del module.peft_config
            module._hf_peft_config_loaded = False
            self.state = None


_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SLOTS_LOCK = threading.Lock()


def _slot(module: Any) -> _Slot:
    with _SLOTS_LOCK:
        slot = _SLOTS.get(module)
        if slot is None:
            slot = _SLOTS[module] = _Slot()
        return slot


def _released(module_ref: weakref.ref) -> None:
    """An adapter was freed: sweep its module now if no other thread holds it (never waits: this runs at GC
    time, possibly inside a run of the module, which the sweep then leaves alone)."""
    module = module_ref()
    slot = _SLOTS.get(module) if module is not None else None
    if slot is not None and slot.lock.acquire(blocking=False):
        try:
            slot.sweep(module)
        finally:
            slot.lock.release()


def adapter_names(module: Any) -> list[str]:
    """The LoRA adapters currently loaded into ``module`` (after dropping those no value holds)."""
    slot = _slot(module)
    with slot.lock:
        slot.sweep(module)
        return list(slot.adapters)


def _adapter(module: Any, name: str, file: str, component: str, load) -> Adapter:
    """The adapter ``name`` on ``module``: the live one, or ``load()`` it now."""
    slot = _slot(module)
    with slot.lock:
        slot.sweep(module)
        ref = slot.adapters.get(name)
        live = ref() if ref is not None else None
        if live is not None:
            return live
        if ref is None:  # a freed adapter not yet swept (the module is running) is taken up again as it is
            load()
            slot.state = None  # loading switches the new adapter on
        adapter = Adapter(name=name, module=module, file=file, component=component)
        adapter._finalizer = weakref.finalize(adapter, _released, weakref.ref(module))
        slot.adapters[name] = weakref.ref(adapter)
        return adapter


def _switch(module: Any, slot: _Slot, wanted: tuple) -> None:
    """Make exactly ``wanted`` ((name, strength), ...) the active adapters of ``module`` (none: all off)."""
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.utils.peft_utils import set_adapter_layers

    if wanted == slot.state:
        return
    if not wanted:
        set_adapter_layers(module, enabled=False)
    else:
        set_adapter_layers(module, enabled=True)
        names, weights = [n for n, _ in wanted], [w for _, w in wanted]
        if isinstance(module, ModelMixin):
            module.set_adapters(names, weights)
        else:
            from diffusers.loaders.lora_base import set_adapters_for_text_encoder

            set_adapters_for_text_encoder(names, module, weights)
    slot.state = wanted


def _wanted(module: Any, loras: tuple) -> tuple:
    """(name, strength) pairs of ``loras`` that sit on ``module``, one per adapter (a LoRA applied twice adds
    its strengths: the same change as applying it twice)."""
    out: dict[str, float] = {}
    for adapter, strength in loras:
        if adapter.module is module:
            out[adapter.name] = out.get(adapter.name, 0.0) + float(strength)
    return tuple(out.items())


@contextmanager
def applied(modules: list, loras: tuple):
    """Run ``modules`` with exactly the adapters of ``loras`` switched on. Each module is locked meanwhile, so
    two prompts on one shared network take turns and no LoRA is loaded into a module while it runs."""
    with ExitStack() as stack:
        for module in sorted({id(m): m for m in modules}.values(), key=id):  # one lock order: no deadlock
            stack.enter_context(_running(module, _wanted(module, loras)))
        yield


@contextmanager
def _running(module: Any, wanted: tuple):
    """One run of ``module`` with ``wanted`` switched on; a run inside another gets its own adapters and hands
    the outer run's back when it ends."""
    slot = _slot(module)
    with slot.lock:
        outer = slot.state if slot.busy else None
        slot.sweep(module)
        if slot.adapters:
            _switch(module, slot, wanted)
        slot.busy += 1
        try:
            yield
        finally:
            slot.busy -= 1
            if outer is not None and slot.adapters:
                _switch(module, slot, outer)


def model_applied(model: ModelBundle):
    """:func:`applied` for a MODEL's network."""
    return applied([model.network], model.loras)


def clip_applied(clip: TextEncoderBundle):
    """:func:`applied` for a CLIP's text encoders."""
    return applied([enc.model for enc in clip.encoders.values()], clip.loras)


# ---- reading a LoRA file ------------------------------------------------------------------------------------

@dataclass
class LoraFile:
    """A LoRA as diffusers reads it: its state dict (component-prefixed), alphas and metadata."""

    name: str
    path: Path
    state: dict
    alphas: dict | None
    metadata: dict | None
    adapter_name: str


def _ldm_module_map(network: Any) -> dict[str, str]:
    """Original (LDM) UNet module name -> diffusers module name, from the network's own parameters."""
    from .checkpoint import unet_key_to_ldm

    cfg = network.config
    lpb = cfg.get("layers_per_block", 2)
    if not isinstance(lpb, int):
        return {}
    # the names as loaded (a network that already carries LoRAs wraps layers as <name>.base_layer)
    keys = [k.replace(".base_layer.", ".") for k in network.state_dict() if ".lora_" not in k]
    with_attn = {int(m[1]) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for k in keys:
        if not k.endswith(".weight"):
            continue
        try:
            out[unet_key_to_ldm(k, lpb, with_attn)[: -len(".weight")]] = k[: -len(".weight")]
        except ValueError:
            continue
    return out


def _split_suffix(key: str) -> tuple[str, str] | None:
    for suffix, kohya in _SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kohya
    return None


def _comfy_to_kohya(state: dict, model: ModelBundle | None, clip: TextEncoderBundle | None, family: Any,
                    what: str) -> dict:
    """ComfyUI's layout renamed to kohya's (which diffusers reads); other layouts are returned as they are."""
    comfy = [k for k in state if k.startswith(("diffusion_model.", "text_encoders.")) or _LDM_UNET.match(k)]
    if not comfy:
        return state
    ldm: dict[str, str] = {}
    if any(not k.startswith("text_encoders.") for k in comfy):
        if model is None or family.network_part != "unet":
            raise NodeError(f"{what}: this LoRA names the original UNet's layers (ComfyUI's layout); that is "
                            f"read for UNet models, not for this {family.label} model")
        ldm = {k.replace(".", "_"): v for k, v in _ldm_module_map(model.network).items()}
    slots = {slot: comp for slot, _, comp in family.encoder_slots}
    out, unknown = {}, []
    for key, value in state.items():
        if key not in comfy:
            out[key] = value
            continue
        split = _split_suffix(key)
        if split is None:
            unknown.append(key)
            continue
        module, suffix = split
        if module.startswith("text_encoders."):
            slot, _, rest = module[len("text_encoders."):].partition(".")
            comp = slots.get(slot) or (next(iter(slots.values())) if len(slots) == 1 else None)
            if comp not in _KOHYA_TE or not rest.startswith("transformer."):
                unknown.append(key)
                continue
            out[_KOHYA_TE[comp] + rest[len("transformer."):].replace(".", "_") + suffix] = value
            continue
        flat = module.removeprefix("diffusion_model.").removeprefix("lora_unet_").replace(".", "_")
        target = ldm.get(flat)
        if target is None:
            unknown.append(key)
            continue
        out["lora_unet_" + target.replace(".", "_") + suffix] = value
    if unknown:
        raise NodeError(f"{what}: {len(unknown)} tensor(s) of this LoRA name no layer of this {family.label} "
                        f"model (e.g. {', '.join(unknown[:3])}); is it a LoRA for another model family, or a "
                        "LyCORIS kind (LoHa, LoKr) that is not read here?")
    return out


def read_lora(path: Path, name: str, model: ModelBundle | None, clip: TextEncoderBundle | None,
              what: str = "lora_name") -> LoraFile:
    """Read and convert a LoRA file for ``model`` / ``clip``'s family (NodeError naming ``what`` when it is
    not a LoRA, or not one for this model)."""
    import diffusers.loaders as loaders
    from safetensors.torch import load_file

    family = (model or clip).family
    loader_name = _LOADERS.get(family.name)
    if loader_name is None:
        raise NodeError(f"{what}: LoRAs are not applied to {family.label} models here yet")
    try:
        refuse_pickle(path)
    except NodeError as exc:
        raise NodeError(f"{what}: {exc}") from None
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        raise NodeError(f"{what}: {name!r} is not a .safetensors file")
    try:
        raw = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise NodeError(f"{what}: cannot read {name!r}: not a valid .safetensors file ({exc})") from exc
    if not raw or not all("lora" in k or k.endswith((".alpha", ".dora_scale")) for k in raw):
        sample = ", ".join(k for k in list(raw)[:3] if "lora" not in k)
        raise NodeError(f"{what}: {name!r} is not a LoRA: its tensors are not LoRA layers (e.g. {sample or 'none'});"
                        " a whole model goes to a checkpoint or model loader")
    for marker, kind in ((".hada_", "LoHa"), ("dora_scale", "DoRA")):
        if any(marker in k for k in raw):
            raise NodeError(f"{what}: {name!r} is a {kind} LoRA, which is not read here (plain LoRA and LoKr are)")
    raw = _comfy_to_kohya(raw, model, clip, family, f"{what} {name!r}")
    loader = getattr(loaders, loader_name)
    kwargs: dict[str, Any] = {"return_lora_metadata": True}
    if family.name == "sdxl" and model is not None:
        kwargs["unet_config"] = model.network.config  # as the SDXL pipeline passes it (sgm block numbers)
    try:
        out = loader.lora_state_dict(raw, **kwargs)
        # (state, alphas, metadata); the transformer families' loaders have no kohya alphas: (state, metadata)
        state, alphas, metadata = out if len(out) == 3 else (out[0], None, out[1])
    except (ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise NodeError(f"{what}: {name!r} is not a LoRA diffusers can read: {exc}") from exc
    digest = hashlib.sha256(f"{path}:{file_identity(path)}".encode()).hexdigest()[:16]
    return LoraFile(name, path, state, alphas, metadata, f"lora_{digest}")


def _peft_keys(state: dict, component: str, text_encoder: Any = None) -> dict:
    """The component's part of a converted LoRA, in peft's names (``<module>.lora_A.weight``), the way
    diffusers loads it (for checking it fits before anything is injected)."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    part = {k[len(component) + 1:]: v for k, v in state.items() if k.startswith(component + ".")}
    if not part:
        return {}
    if text_encoder is None:
        return part if "lora_A" in next(iter(part)) else convert_unet_state_dict_to_peft(part)
    part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    if not hasattr(text_encoder, "text_model"):
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    return part


def _misfits(module: Any, peft: dict) -> list[str]:
    """Layers a LoRA names that ``module`` lacks, or whose shapes differ."""
    import torch

    problems = []
    for key, value in peft.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        path = re.split(r"\.lora_[AB]\.", key)[0]
        try:
            layer = module.get_submodule(path)
        except AttributeError:
            problems.append(f"{path} (no such layer)")
            continue
        layer = getattr(layer, "base_layer", layer)  # a layer that already carries another LoRA
        if isinstance(layer, torch.nn.Linear):
            n_in, n_out = layer.in_features, layer.out_features
        elif isinstance(layer, torch.nn.Conv2d):
            n_in, n_out = layer.in_channels, layer.out_channels
        else:
            problems.append(f"{path} (a {type(layer).__name__}, not a linear or convolution layer)")
            continue
        if ".lora_A." in key and value.ndim >= 2 and value.shape[1] != n_in:
            problems.append(f"{path} (LoRA input {value.shape[1]}, layer input {n_in})")
        if ".lora_B." in key and value.shape[0] != n_out:
            problems.append(f"{path} (LoRA output {value.shape[0]}, layer output {n_out})")
    return sorted(set(problems))


@contextmanager
def _quiet_peft():
    """peft warns whenever a second adapter joins a module; several adapters per module is the design here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def apply_lora(model: ModelBundle | None, clip: TextEncoderBundle | None, lora: LoraFile, strength_model: float,
               strength_clip: float, what: str = "lora_name") -> tuple[ModelBundle | None, TextEncoderBundle | None]:
    """``model`` and ``clip`` with the LoRA added at these strengths (parts at strength 0 stay as they are)."""
    import diffusers.loaders as loaders
    from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA

    family = (model or clip).family
    loader = getattr(loaders, _LOADERS[family.name])
    targets = []  # (component, module, is_text_encoder, peft keys)
    if model is not None:
        targets.append((family.network_part, model.network, False))
    if clip is not None:
        comps = {slot: comp for slot, _, comp in family.encoder_slots}
        for slot, enc in clip.encoders.items():
            if slot in comps:
                targets.append((comps[slot], enc.model, True))
    found = {comp: _peft_keys(lora.state, comp, module if is_te else None) for comp, module, is_te in targets}
    known = {comp for comp, _, _ in targets} | {comp for _, _, comp in family.encoder_slots} | {family.network_part}
    foreign = sorted({k.split(".")[0] for k in lora.state} - known)
    if foreign:
        raise NodeError(f"{what}: {lora.name!r} has layers for parts this {family.label} model does not have "
                        f"({', '.join(foreign)}): a LoRA for another model family?")
    if not any(found.values()):
        raise NodeError(f"{what}: {lora.name!r} holds no LoRA layers for this {family.label} model's "
                        f"{' and '.join(c for c, _, _ in targets)} (only for: "
                        f"{', '.join(sorted({k.split('.')[0] for k in lora.state}))})")
    problems = [f"{comp}.{p}" for comp, module, _ in targets for p in _misfits(module, found[comp])]
    if problems:
        raise NodeError(f"{what}: {lora.name!r} does not fit this {family.label} model: "
                        f"{len(problems)} layer(s) differ, e.g. {'; '.join(problems[:3])}; a LoRA for another "
                        "model family or size?")

    def load(comp: str, module: Any, is_te: bool) -> None:
        try:
            with _quiet_peft():
                if is_te:
                    loader.load_lora_into_text_encoder(
                        lora.state, network_alphas=lora.alphas, text_encoder=module, prefix=comp,
                        adapter_name=lora.adapter_name, metadata=lora.metadata,
                        low_cpu_mem_usage=_LOW_CPU_MEM_USAGE_DEFAULT_LORA)
                else:
                    module.load_lora_adapter(
                        lora.state, prefix=comp, network_alphas=lora.alphas, adapter_name=lora.adapter_name,
                        metadata=lora.metadata, low_cpu_mem_usage=_LOW_CPU_MEM_USAGE_DEFAULT_LORA)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise NodeError(f"{what}: loading {lora.name!r} into the {comp} failed: {exc}") from exc

    out_model, out_clip = model, clip
    for comp, module, is_te in targets:
        strength = strength_clip if is_te else strength_model
        if not found[comp] or strength == 0:
            continue
        adapter = _adapter(module, lora.adapter_name, lora.name, comp, partial(load, comp, module, is_te))
        if is_te:
            out_clip = replace(out_clip, loras=(*out_clip.loras, (adapter, float(strength))))
        else:
            out_model = replace(out_model, loras=(*out_model.loras, (adapter, float(strength))))
    return out_model, out_clip


# ---- nodes --------------------------------------------------------------------------------------------------

def _extra(ctx: Any) -> list:
    return getattr(ctx.paths, "models", []) or []


list_loras = partial(list_parts, "lora", suffixes=(".safetensors", *PICKLE_SUFFIXES))


def _lora_file(ctx: Any, name: str, model: ModelBundle | None, clip: TextEncoderBundle | None) -> LoraFile:
    return read_lora(find_part("lora", name, "lora_name", _extra(ctx)), name, model, clip)


def _fingerprint(cls, literals: dict, ctx: Any) -> Any:
    try:
        return file_identity(find_part("lora", str(literals.get("lora_name", "")), "lora_name", _extra(ctx)))
    except NodeError:
        return None


STRENGTH = dict(ge=-STRENGTH_LIMIT, le=STRENGTH_LIMIT, step=0.01)


class LoraLoader(Node):
    """Apply a LoRA (loras/ folder) to a MODEL and its CLIP, each at its own strength (negative strengths
    subtract it). The base model is not reloaded: the result shares its networks, and the inputs stay as they
    were for the rest of the graph."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load LoRA (Model and CLIP)"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL", tooltip="the diffusion model the LoRA is applied to")
        clip: Any = Link("CLIP", tooltip="the text encoder the LoRA is applied to")
        lora_name: str = Widget("", choices=list_loras, tooltip="a LoRA .safetensors file in loras/")
        strength_model: float = Widget(1.0, **STRENGTH, tooltip="how strongly to change the diffusion model")
        strength_clip: float = Widget(1.0, **STRENGTH, tooltip="how strongly to change the text encoder")

    OUTPUTS = (Output("MODEL", "MODEL", "the model with the LoRA"), Output("CLIP", "CLIP", "the CLIP with the LoRA"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model, clip = _check_model(inputs.model), check_clip(inputs.clip)
        if inputs.strength_model == 0 and inputs.strength_clip == 0:
            return (model, clip)
        if model.family.name != clip.family.name:
            raise NodeError(f"clip: a {clip.family.label} CLIP with a {model.family.label} model; connect the "
                            "CLIP that belongs to the model")
        lora = _lora_file(ctx, inputs.lora_name, model, clip)
        return apply_lora(model, clip, lora, inputs.strength_model, inputs.strength_clip)

    fingerprint = classmethod(_fingerprint)


class LoraLoaderModelOnly(Node):
    """Apply a LoRA (loras/ folder) to a MODEL alone (its text-encoder layers, if any, are not used)."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load LoRA"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        lora_name: str = Widget("", choices=list_loras, tooltip="a LoRA .safetensors file in loras/")
        strength_model: float = Widget(1.0, **STRENGTH)

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        if inputs.strength_model == 0:
            return (model,)
        lora = _lora_file(ctx, inputs.lora_name, model, None)
        return (apply_lora(model, None, lora, inputs.strength_model, 0.0)[0],)

    fingerprint = classmethod(_fingerprint)


NODES = [LoraLoader, LoraLoaderModelOnly]
