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
        image_ops,
        inpainting,
        latent_ops,
        loaders,
        logic,
        lora,
        model_patches,
        sigma_nodes,
        upscale_models,
        utility,
    )
    from .compare import CompareSchedulers
    from .conditioning import TextEncode
    from .images import (
        ImageCompare,
        LoadImage,
        MaskPreview,
        PreviewImage,
        SaveAnimatedPNG,
        SaveAnimatedWEBP,
        SaveImage,
        SaveImageWebsocket,
    )
    from .latents import EmptyLatent, VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled
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
        VAEEncodeTiled,
        VAEDecodeTiled,
        # images
        LoadImage,
        SaveImage,
        PreviewImage,
        ImageCompare,
        MaskPreview,
        SaveAnimatedWEBP,
        SaveAnimatedPNG,
        SaveImageWebsocket,
        *upscale_models.NODES,
        # ComfyUI core names, for workflows saved from ComfyUI
        *aliases.NODES,
        *custom_sampling.NODES,
        *model_patches.NODES,
        *utility.NODES,
        *image_ops.NODES,
        *latent_ops.NODES,
        # control flow
        *logic.NODES,
    ]


def register(registry) -> None:
    """Add every built-in node to ``registry``."""
    registry.register_all(_node_classes())
