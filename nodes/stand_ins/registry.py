"""Which tiny model each family's stand-ins come from, and which part each single-file layout takes: one
:class:`FamilyStandIns` per family in :data:`FAMILIES`. A new family adds its entry here (a builder in
:mod:`.tiny`, writers in :mod:`.layouts`); the name hints below already name the families that have none yet,
so their files get a message saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import flux, layouts, lora_files, tiny, upscale_files

#: a built pipeline -> the tensors of one file; a part placed with a role (an upscale model's scale) is
#: written by ``writer(pipeline, role)``
Writer = Callable[..., dict]


@dataclass(frozen=True)
class FamilyStandIns:
    """The stand-ins of one family: ``build(workdir)`` makes its tiny pipeline; each writer turns that
    pipeline into one file's tensors. A kind of file without a writer is refused, with its note if it has one."""

    name: str
    label: str
    build: Callable[..., Any]
    #: part kind (checkpoint, diffusion_model, vae, lora; controlnet as its loader lands) -> writer
    parts: Mapping[str, Writer] = field(default_factory=dict)
    #: text-encoder role (clip_l, clip_g, t5, ...) -> writer
    text_encoders: Mapping[str, Writer] = field(default_factory=dict)
    #: the roles of a CLIP loader's files by position, by how many files it takes
    roles_by_position: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    #: why a kind of file has no writer (shown instead of a generic "not read yet")
    notes: Mapping[str, str] = field(default_factory=dict)
    #: part kind -> its config (a built pipeline -> config.json), written beside the file in a hidden
    #: ``.stand-in-<family>`` folder for loaders configuring single files from folders next to them (ControlNet)
    configs: Mapping[str, Callable[[Any], dict]] = field(default_factory=dict)
    #: text-encoder roles whose stand-in is another family's (role -> that family): files such as
    #: ``clip_l.safetensors`` and ``t5xxl_fp16.safetensors`` serve several families, so one stand-in does too
    #: (the borrowing family's tiny network then takes that family's encoder widths)
    encoders_from: Mapping[str, str] = field(default_factory=dict)

    @property
    def encoder_roles(self) -> tuple[str, ...]:
        return (*self.text_encoders, *(r for r in self.encoders_from if r not in self.text_encoders))


def _vae(pipe) -> dict:
    return layouts.vae_state(pipe.vae)


def _encoder(attr: str) -> Writer:
    return lambda pipe: layouts.text_encoder_state(getattr(pipe, attr))


def _sd3_controlnet(pipe):
    """An SD3 ControlNet (one block) from the stand-in transformer, built once per pipeline."""
    net = getattr(pipe, "_stand_in_controlnet", None)
    if net is None:
        from diffusers import SD3ControlNetModel

        net = SD3ControlNetModel.from_transformer(pipe.transformer, num_layers=1, num_extra_conditioning_channels=0)
        pipe._stand_in_controlnet = net
    return net


FAMILIES: dict[str, FamilyStandIns] = {f.name: f for f in (
    FamilyStandIns(
        "sd1", "Stable Diffusion 1.x", partial(tiny.build_sd1, **tiny.STAND_IN_SIZES),
        parts={"checkpoint": layouts.sd1_checkpoint, "vae": _vae, "lora": lora_files.sd1_lora},
        text_encoders={"clip_l": _encoder("text_encoder")}, roles_by_position={1: ("clip_l",)},
        notes={"diffusion_model": "SD1.x UNets are not read from single files here yet (use the checkpoint)"}),
    FamilyStandIns(
        "sd2", "Stable Diffusion 2.x", partial(tiny.build_sd2v, **tiny.STAND_IN_SIZES), parts={"vae": _vae},
        notes={"checkpoint": "SD2.x single-file checkpoints are not read here yet (a diffusers folder is)",
               "diffusion_model": "SD2.x UNets are not read from single files here yet",
               "text_encoder": "SD2.x text encoders are not read from single files here yet"}),
    FamilyStandIns(
        "sdxl", "Stable Diffusion XL", partial(tiny.build_sdxl, **tiny.STAND_IN_SIZES),
        parts={"checkpoint": layouts.sdxl_checkpoint, "vae": _vae, "lora": lora_files.sdxl_lora},
        text_encoders={"clip_l": _encoder("text_encoder"), "clip_g": _encoder("text_encoder_2")},
        roles_by_position={1: ("clip_l",), 2: ("clip_l", "clip_g")},
        notes={"diffusion_model": "SDXL UNets are not read from single files here yet (use the checkpoint)"}),
    FamilyStandIns(
        "sd3", "Stable Diffusion 3.x", tiny.build_sd3_single_file,
        parts={"checkpoint": layouts.sd3_checkpoint, "vae": _vae,
               "diffusion_model": lambda pipe: layouts.sd3_original(pipe.transformer),
               "lora": lora_files.transformer_lora, "controlnet": lambda pipe: _sd3_controlnet(pipe).state_dict()},
        configs={"controlnet": lambda pipe: json.loads(_sd3_controlnet(pipe).to_json_string())},
        text_encoders={"clip_l": _encoder("text_encoder"), "clip_g": _encoder("text_encoder_2"),
                       "t5": _encoder("text_encoder_3")},
        roles_by_position={1: ("t5",), 2: ("clip_l", "clip_g"), 3: ("clip_l", "clip_g", "t5")}),
    FamilyStandIns(
        "flux", "Flux.1", flux.build_flux,
        parts={"checkpoint": flux.flux_checkpoint, "diffusion_model": flux.flux_transformer_file,
               "vae": flux.flux_vae},
        text_encoders={"clip_l": flux.flux_clip_l, "t5": lambda pipe: layouts.text_encoder_state(pipe.text_encoder_2)},
        roles_by_position={1: ("t5",), 2: ("clip_l", "t5")},
        notes={"lora": "LoRAs are not applied to Flux.1 models here yet"}),
    FamilyStandIns(
        "z_image", "Z-Image", partial(tiny.build_z_image, vae_attention=False,
                                      vae_channels=tiny.STAND_IN_SIZES["vae_channels"]),
        parts={"vae": _vae, "diffusion_model": lambda pipe: layouts.z_image_original(pipe.transformer)},
        text_encoders={"qwen": lambda pipe: layouts.qwen3_causal_lm(pipe.text_encoder)},
        roles_by_position={1: ("qwen",)},
        notes={"checkpoint": "Z-Image all-in-one checkpoints are not read here yet (the split files are)"}),
    FamilyStandIns(
        "qwen_image", "Qwen-Image", tiny.build_qwen_image,
        parts={"vae": lambda pipe: layouts.wan_vae_layout(pipe.vae.state_dict()),
               "diffusion_model": lambda pipe: dict(pipe.transformer.state_dict())},
        text_encoders={"qwen": lambda pipe: layouts.qwen25_vl_original(pipe.text_encoder.state_dict())},
        roles_by_position={1: ("qwen",)},
        notes={"checkpoint": "Qwen-Image all-in-one checkpoints are not read here yet (the split files are)"}),
    FamilyStandIns(
        "esrgan", "ESRGAN", lambda workdir: None,
        parts={"upscale_model": lambda _pipe, role: upscale_files.rrdb_state(int(role.rstrip("x")))}),
)}

#: parts whose stand-in fits any workflow (no family's pipeline): part -> (its family entry, the role the file
#: name gives it)
FREE_PARTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "upscale_model": ("esrgan", lambda name: f"{upscale_files.scale_of_name(name)}x"),
}


def model_families() -> list[str]:
    """The model families with stand-ins (not the entries of free-standing parts)."""
    free = {family for family, _ in FREE_PARTS.values()}
    return [f for f in FAMILIES if f not in free]


#: file-name patterns -> the family they name, first match wins (matched against the lower-cased name).
#: Families without stand-ins are named too, so their files get a clear refusal.
NAME_HINTS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), f) for p, f in (
    (r"refiner", "sdxl_refiner"),
    (r"flux[-_.]?2|flux2", "flux2"),
    (r"flux|^ae\.safetensors$", "flux"),
    (r"z[-_]?image", "z_image"),
    (r"qwen[-_]?image", "qwen_image"),
    (r"wan[-_]?\d|^wan[-_]|umt5", "wan"),
    (r"hunyuan", "hunyuan"),
    (r"ltx", "ltxv"),
    (r"hidream", "hidream"),
    (r"chroma", "chroma"),
    (r"lumina", "lumina2"),
    (r"cosmos", "cosmos"),
    (r"mochi", "mochi"),
    (r"cascade", "stable_cascade"),
    (r"pixart", "pixart"),
    (r"omnigen", "omnigen2"),
    (r"ace[-_]?step", "ace"),
    (r"stable[-_]?audio", "stable_audio"),
    (r"kandinsky", "kandinsky5"),
    (r"sd3|sd[-_]?3\.5|sd35|stable[-_]diffusion[-_]3", "sd3"),
    (r"sd[-_]?xl|xl[-_]?base|xl", "sdxl"),
    (r"v2[-_.]1|v2[-_]0|sd[-_]?2|768[-_]v|512[-_]base|stable[-_]diffusion[-_]2", "sd2"),
    (r"v1[-_.][45]|sd[-_]?1|sd15|stable[-_]diffusion[-_]v?1|vae-ft-(mse|ema)", "sd1"),
))

#: file names that several families' downloads share -> those families: the workflow's family picks (Z-Image
#: ships the Flux VAE as ``ae.safetensors``)
SHARED_NAMES: dict[str, tuple[str, ...]] = {"ae.safetensors": ("flux", "z_image")}

#: a CLIP loader's ``type`` -> the families it can make (the first unless the workflow's models say another)
CLIP_TYPE_FAMILIES: dict[str, tuple[str, ...]] = {
    "stable_diffusion": ("sd1", "sd2"), "sdxl": ("sdxl",), "sd3": ("sd3",), "flux": ("flux",),
    "flux2": ("flux2",), "lumina2": ("lumina2", "z_image"), "wan": ("wan",), "qwen_image": ("qwen_image",),
    "hunyuan_video": ("hunyuan",), "hunyuan_video_15": ("hunyuan",), "hunyuan_image": ("hunyuan",),
    "ltxv": ("ltxv",),
}

#: text-encoder file-name patterns -> the role (slot) the file fills
ROLE_HINTS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"clip[-_]?l\b|clip[-_]?l[-_.]|vit[-_]?l", "clip_l"),
    (r"clip[-_]?g\b|clip[-_]?g[-_.]|bigg", "clip_g"),
    (r"t5[-_]?gemma", "t5gemma"),
    (r"umt5", "umt5"),
    (r"byt5", "byt5"),
    (r"t5", "t5"),
    (r"qwen", "qwen"),
    (r"gemma", "gemma"),
    (r"llama", "llama"),
    (r"mistral", "mistral"),
))


def family_of_name(name: str) -> str | None:
    low = name.lower().rsplit("/", 1)[-1]
    for pattern, family in NAME_HINTS:
        if pattern.search(low):
            return family
    return None


def role_of_name(name: str) -> str | None:
    low = name.lower().rsplit("/", 1)[-1]
    for pattern, role in ROLE_HINTS:
        if pattern.search(low):
            return role
    return None
