"""The built-in diffusion nodes. ``register`` is the one place they are listed (entry point
``graph_runtime.nodes``)."""

import os

# Idle OpenMP threads sleep rather than spin, so a busy neighbour process does not stall every parallel region
# (must be set before torch loads; the command line sets it too). See graph_runtime.cli.quiet_threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _node_classes() -> list:
    """Every built-in node class, in the order the editor lists them. Add new modules' nodes here."""
    from . import (
        aliases,
        conditioning_ops,
        controlnet,
        custom_sampling,
        inpainting,
        loaders,
        logic,
        lora,
        model_patches,
        sigma_nodes,
        upscale_models,
    )
    from .compare import CompareSchedulers
    from .conditioning import TextEncode
    from .images import LoadImage, PreviewImage, SaveImage
    from .latents import EmptyLatent, VAEDecode, VAEEncode
    from .models import LoadModel
    from .sampling import Sampler, Scheduler, SchedulerFromSigmas

    return [
        # loaders
        LoadModel,
        *loaders.NODES,
        *lora.NODES,
        # conditioning
        TextEncode,
        *conditioning_ops.NODES,
        *inpainting.NODES,
        *controlnet.NODES,
        # sampling
        Scheduler,
        Sampler,
        SchedulerFromSigmas,
        *sigma_nodes.NODES,
        CompareSchedulers,
        # latents
        EmptyLatent,
        VAEEncode,
        VAEDecode,
        # images
        LoadImage,
        SaveImage,
        PreviewImage,
        *upscale_models.NODES,
        # ComfyUI core names, for workflows saved from ComfyUI
        *aliases.NODES,
        *custom_sampling.NODES,
        *model_patches.NODES,
        # control flow
        *logic.NODES,
    ]


def register(registry) -> None:
    """Add every built-in node to ``registry``."""
    registry.register_all(_node_classes())
