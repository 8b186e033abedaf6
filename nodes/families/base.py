"""The model-family seam: what differs between SD1.x, SD2.x, SDXL, SD3.x, ... and nothing else.

A family is one subclass of :class:`Family` in its own module. The loaders, TextEncode, the Sampler, the
latent nodes and the previews know only this interface:

* recognise -- :meth:`Family.matches_folder` (a diffusers folder's ``model_index.json`` and configs);
* load -- :meth:`Family.load_folder` (every part with ``from_pretrained``, offline, in the asked dtype);
* latent format -- :attr:`Family.latent` (channels, spatial factor, preview colours);
* text conditioning -- :meth:`Family.encode` (which encoders, which hidden layer, pooled outputs);
* denoiser inputs -- :meth:`Family.network_inputs` (the family's extra inputs besides the text states) and
  :meth:`Family.network` (the call convention of its network);
* guidance -- :meth:`Family.guide` (how the conditional and unconditional predictions combine) and
  :attr:`Family.matched_lengths` (whether positive and negative text states are evened out to one length);
* model sampling -- read from the model's own scheduler config (:mod:`schedulers.model_sampling`); a family
  whose pipeline passes its own sigmas says so in :meth:`Family.pipeline_sigmas`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from graph_runtime import NodeError

from ..model_store import PICKLE_SUFFIXES


@dataclass(frozen=True)
class LatentFormat:
    """How a family's latents look: ``channels`` at 1/``spatial_factor`` of the image size; ``rgb_factors``
    (one row per channel: R, G, B) and ``rgb_bias`` map latents to preview colours. ``packing`` is the side
    of the latent patches the network sees as one token of ``channels * packing**2`` values (Flux: 2); the
    latents between nodes stay unpacked."""

    channels: int
    spatial_factor: int = 8
    rgb_factors: tuple[tuple[float, float, float], ...] | None = None
    rgb_bias: tuple[float, float, float] | None = None
    packing: int = 1

    def image_seq_len(self, latent_shape: tuple[int, ...]) -> int:
        """How many image tokens the network sees for latents of ``latent_shape`` ([b, c, h, w])."""
        return (latent_shape[-2] // self.packing) * (latent_shape[-1] // self.packing)


@dataclass(eq=False)
class TextEncoder:
    """One tokenizer and its text encoder (transformers models), as a family's encoder slot holds them."""

    tokenizer: Any
    model: Any


@dataclass(eq=False)
class Parts:
    """What a loader produced: the denoising network, text encoders by slot, the VAE, the scheduler config.
    A part a file does not hold is None."""

    network: Any = None
    encoders: dict[str, TextEncoder] = field(default_factory=dict)
    vae: Any = None
    scheduler_config: dict | None = None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise NodeError(f"cannot read {path}: {exc}") from exc


def load_component(folder: Path, name: str, index: Mapping[str, Any], dtype: torch.dtype) -> Any:
    """``from_pretrained`` of the component ``name`` of a diffusers folder, as ``model_index.json`` names its
    library and class (offline; weights in ``dtype``, tokenizers as they are)."""
    spec = index.get(name)
    if not isinstance(spec, list | tuple) or len(spec) != 2 or spec[0] is None:
        raise NodeError(f"{folder.name}: model_index.json has no {name} component")
    library, class_name = spec
    try:
        cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError) as exc:
        raise NodeError(f"{folder.name}/{name}: {library}.{class_name} is not available ({exc})") from exc
    kwargs: dict[str, Any] = {"local_files_only": True}
    if "Tokenizer" not in class_name:
        kwargs |= {"torch_dtype": dtype, "use_safetensors": True}
    if library == "diffusers" and "Scheduler" not in class_name:
        # loads in full on the CPU (what diffusers falls back to without accelerate, said so in a warning)
        kwargs["low_cpu_mem_usage"] = False
    try:
        return cls.from_pretrained(str(folder), subfolder=name, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise NodeError(f"cannot load {folder.name}/{name}: {exc}") from exc


def check_weights(folder: Path, parts: tuple[str, ...]) -> None:
    """Every weight-holding subfolder has .safetensors (pickle weights, which can run code, are refused)."""
    for part in parts:
        sub = folder / part
        if not sub.is_dir():
            raise NodeError(f"{folder.name}: missing the {part}/ folder")
        if not any(sub.glob("*.safetensors")):
            pickles = [p.name for p in sub.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                raise NodeError(f"only .safetensors are loaded: {folder.name}/{part} holds only pickle "
                                f"weights ({', '.join(pickles)})")
            raise NodeError(f"{folder.name}/{part}: no .safetensors weights")


def repeat_to(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """A batch-1 (or batch-dividing) conditioning tensor repeated for ``batch`` latents, each prompt for its
    images in turn (the pipelines' ``num_images_per_prompt``)."""
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise NodeError(f"{what}: {t.shape[0]} prompts do not divide a latent batch of {batch}")
    return t.repeat_interleave(batch // t.shape[0], dim=0)


class Family:
    """One model family. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: diffusers pipeline class names of its folders' model_index.json
    pipelines: ClassVar[tuple[str, ...]] = ()
    #: the folder component holding the denoising network
    network_part: ClassVar[str] = "unet"
    #: text-encoder slots: (slot name, tokenizer component, text-encoder component)
    encoder_slots: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    #: slots a model may lack (the pipeline then stands in zeros, e.g. SD3 without T5)
    optional_slots: ClassVar[tuple[str, ...]] = ()
    latent: ClassVar[LatentFormat] = LatentFormat(4)
    #: the scheduler config of the family's reference model, for a network loaded without one
    default_scheduler: ClassVar[dict] = {}
    #: positive and negative text states are evened out to one length before guidance batches them
    #: (:func:`nodes.types.match_lengths`); a family whose network takes each prompt's own tokens says False
    matched_lengths: ClassVar[bool] = True
    #: ComfyUI's timestep multiplier for the family's flow network (the network sees sigma x this there):
    #: 1000 for SD3-style models, 1 for those taking the noise level itself (what ModelSamplingAuraFlow sets)
    comfy_multiplier: ClassVar[float] = 1000.0
    #: the pipeline gives its own sigmas to the flow-sigma solvers too (UniPC, DPM++ on flow models), where
    #: FluxPipeline leaves those to the solver
    sigmas_for_flow_solvers: ClassVar[bool] = False

    # ---- recognise ----------------------------------------------------------------------------------
    def matches_folder(self, folder: Path, index: Mapping[str, Any]) -> bool:
        return index.get("_class_name") in self.pipelines

    def matches_network_config(self, config: Mapping[str, Any]) -> bool:
        """Whether a network's own config.json (a component folder loaded alone) is this family's."""
        return False

    def network_file_mismatch(self, shapes: Mapping[str, tuple[int, ...]], config: Mapping[str, Any]) -> str:
        """Why a single diffusion-model file does not fit ``config`` ("" when it fits). By default the
        family reads no single network files."""
        return f"{self.label} diffusion models are not read from single files yet"

    def matches_file(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether an all-in-one checkpoint (its tensor names and shapes) is this family's."""
        return False

    def load_network_file(self, path: Path, folder: Path, dtype: torch.dtype) -> Any:
        """The network of a single diffusion-model file that fits the config of ``folder`` (diffusers'
        ``from_single_file`` by default)."""
        from ..part_files import component_class

        cls, _ = component_class(folder / self.network_part)
        return cls.from_single_file(str(path), config=str(folder), subfolder=self.network_part, torch_dtype=dtype,
                                    local_files_only=True, low_cpu_mem_usage=False)

    def load_file(self, path: Path, dtype: torch.dtype, config_folders: Any) -> Parts:
        raise NodeError(f"{path.name}: single-file {self.label} checkpoints are not loaded yet; use the model's "
                        "diffusers folder")

    # ---- load ---------------------------------------------------------------------------------------
    def load_folder(self, folder: Path, dtype: torch.dtype) -> Parts:
        index = read_json(folder / "model_index.json")
        required = [self.network_part, "vae"] + [enc for slot, _, enc in self.encoder_slots
                                                 if slot not in self.optional_slots]
        check_weights(folder, tuple(required))
        encoders = {}
        for slot, tok, enc in self.encoder_slots:
            if slot in self.optional_slots and (index.get(enc) in (None, [None, None])
                                                or not (folder / enc).is_dir()):
                continue
            encoders[slot] = TextEncoder(load_component(folder, tok, index, dtype),
                                         load_component(folder, enc, index, dtype))
        return Parts(
            network=load_component(folder, self.network_part, index, dtype),
            encoders=encoders,
            vae=load_component(folder, "vae", index, dtype),
            scheduler_config=read_json(folder / "scheduler" / "scheduler_config.json"),
        )

    # ---- model sampling -----------------------------------------------------------------------------
    def sampling_config(self, scheduler_config: dict) -> dict:
        """A loaded model's scheduler config with what the family adds for its model sampling (e.g. the size
        of ComfyUI's sigma table); keys diffusers does not know are ignored by its schedulers."""
        return scheduler_config

    def pipeline_sigmas(self, steps: int) -> list[float] | None:
        """The sigmas the family's pipeline gives ``set_timesteps`` (None: it passes only the step count)."""
        return None

    # ---- text ---------------------------------------------------------------------------------------
    def encode(self, clip: Any, text: str, ctx: Any = None, **options: Any) -> Any:
        """A prompt -> Conditioning, as the family's diffusers pipeline encodes it."""
        raise NotImplementedError

    def encoder(self, clip: Any, slot: str) -> TextEncoder | None:
        enc = clip.encoders.get(slot)
        if enc is None and slot not in self.optional_slots:
            raise NodeError(f"clip: this {self.label} text encoder has no {slot} part; load a CLIP that has it")
        return enc

    # ---- denoiser -----------------------------------------------------------------------------------
    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        """Keyword inputs of the network for one conditioning, repeated for the latent batch."""
        return {"encoder_hidden_states": repeat_to(cond.embeds, latent_shape[0], what)}

    def network(self, model: Any) -> Callable[..., Any]:
        """The network as ``f(x, t, **inputs) -> output`` (a UNet's call convention by default)."""
        return model.network

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        """Classifier-free guidance as the family's pipeline computes it (the same value in every family;
        the order of operations decides the last bits)."""
        return uncond + cfg * (cond - uncond)

