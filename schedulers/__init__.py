"""Schedulers and the generic sampler: a plain library on torch + diffusers (no node engine, no server).

- ``registry``: scheduler names -> diffusers classes and what each supports
- ``sigmas``: SIGMAS builders (Karras, exponential, beta, ComfyUI's schedulers), edits and validation
- ``schedule``: ``Schedule`` and its builders (``build_schedule``, ``schedule_from_sigmas``)
- ``guidance``: ``CFGDenoiser`` (UNet + text conditioning + classifier-free guidance)
- ``sampling``: ``sample`` -- the loop, pipeline-exact for diffusers schedulers
- ``kdiffusion``: k-diffusion-style step rules over any SIGMAS
- ``comfy_names``: ComfyUI KSampler (sampler_name, scheduler) names mapped onto the above

Typical use (what StableDiffusionPipeline does, with the scheduler swapped by name)::

    schedule = build_schedule("dpmpp_2m", pipe.scheduler.config, steps=25, sigma_spacing="karras",
                              device=unet.device)
    noise, generator = make_noise((1, 4, 64, 64), seed=42, device=unet.device)
    latents = sample(CFGDenoiser(unet, positive, negative, cfg=7.5), noise, schedule, generator)
"""

import importlib

from .registry import REGISTRY, MissingDependencyError, compatible_names, names

#: names that load torch and diffusers, imported when first used (so the registry and the ComfyUI names can be
#: read, e.g. to declare nodes, without them)
_LAZY = {"CFGDenoiser": "guidance", "SamplingInterrupted": "sampling", "make_noise": "sampling",
         "sample": "sampling", "Schedule": "schedule", "build_schedule": "schedule",
         "schedule_from_sigmas": "schedule"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CFGDenoiser",
    "MissingDependencyError",
    "REGISTRY",
    "SamplingInterrupted",
    "Schedule",
    "build_schedule",
    "compatible_names",
    "make_noise",
    "names",
    "sample",
    "schedule_from_sigmas",
]
