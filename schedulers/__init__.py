"""Schedulers and the generic sampler: a plain library on torch + diffusers (no node engine, no server).

- ``registry``: scheduler names -> diffusers classes and what each supports
- ``sigmas``: SIGMAS builders (Karras, exponential, beta, ComfyUI's schedulers), edits and validation
- ``schedule``: ``Schedule`` and its builders (``build_schedule``, ``schedule_from_sigmas``)
- ``guidance``: ``CFGDenoiser`` (UNet + text conditioning + classifier-free guidance)
- ``sampling``: ``sample`` -- the loop, pipeline-exact for diffusers schedulers
- ``kdiffusion``: k-diffusion-style step rules over any SIGMAS
- ``comfy_names``: ComfyUI KSampler (sampler_name, scheduler) names mapped onto the above
"""
