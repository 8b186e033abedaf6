"""Nodes that change how a loaded model or text encoder is used, without reloading it (ComfyUI's names):
CLIPSetLastLayer, ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow, ModelSamplingFlux. Each
returns a new MODEL / CLIP value that shares the network with its input, so the input stays as it was for the
rest of the graph."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .conditioning import check_clip
from .sampling import _check_model


class CLIPSetLastLayer(Node):
    """Take the text encoders' hidden state from an earlier layer ("clip skip"): -1 is the family's own
    choice of the last layer, -2 the one before, ... For SD1.x it matches diffusers' ``clip_skip``
    (``-n`` here is ``clip_skip = n - 1``), final layer norm included."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "CLIP Set Last Layer"

    class Inputs(NodeInputs):
        clip: Any = Link("CLIP")
        stop_at_clip_layer: int = Widget(-1, ge=-24, le=-1, step=1)

    OUTPUTS = (Output("CLIP", "CLIP"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        clip = check_clip(inputs.clip)
        layer = inputs.stop_at_clip_layer
        for slot, enc in clip.encoders.items():
            n = getattr(enc.model.config, "num_hidden_layers", None)
            if slot.startswith("clip") and n is not None and -layer > n:
                raise NodeError(f"stop_at_clip_layer: the {slot} text encoder has {n} layers; use -1 .. -{n}, "
                                f"got {layer}")
        return (replace(clip, last_layer=layer),)


class ModelSamplingDiscrete(Node):
    """Say how a DDPM-trained model predicts (eps, v_prediction or x0: the clean image itself), optionally
    with zero terminal SNR (diffusers' ``rescale_betas_zero_snr``), for models whose files do not say it
    themselves."""

    CATEGORY = "advanced/model"
    DISPLAY_NAME = "ModelSamplingDiscrete"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        sampling: Literal["eps", "v_prediction", "lcm", "x0", "img_to_img"] = Widget("eps")
        zsnr: bool = Widget(False)

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers.model_sampling import is_flow_config

        model = _check_model(inputs.model)
        if is_flow_config(model.scheduler_config):
            raise NodeError(f"model: {model.name} is a flow-matching model ({model.family.label}); use "
                            "ModelSamplingSD3 for its shift")
        kinds = {"eps": "epsilon", "v_prediction": "v_prediction", "x0": "sample"}
        if inputs.sampling not in kinds:
            raise NodeError(f"sampling: {inputs.sampling} is not supported here; use eps, v_prediction or x0")
        return (model.with_config(prediction_type=kinds[inputs.sampling], rescale_betas_zero_snr=inputs.zsnr),)


def _flow_model(value: Any, purpose: str) -> Any:
    """The MODEL input of a flow-shift node; NodeError naming it when the model is no flow-matching one."""
    from schedulers.model_sampling import is_flow_config

    model = _check_model(value)
    if not is_flow_config(model.scheduler_config):
        raise NodeError(f"model: {model.name} ({model.family.label}) is not a flow-matching model; {purpose}")
    return model


class ModelSamplingSD3(Node):
    """Set a flow-matching model's timestep shift (SD3's ``shift``: higher spends more steps at high noise)."""

    CATEGORY = "advanced/model"
    DISPLAY_NAME = "ModelSamplingSD3"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        shift: float = Widget(3.0, ge=0.0, le=100.0, step=0.01)

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _flow_model(inputs.model, "ModelSamplingSD3 sets the shift of SD3-style models")
        if inputs.shift <= 0:
            raise NodeError("shift: must be above 0")
        return (model.with_config(shift=float(inputs.shift)),)


class ModelSamplingAuraFlow(Node):
    """Set the timestep shift of a flow-matching model whose network takes the noise level itself as its
    timestep (ComfyUI's multiplier 1: Z-Image, Qwen-Image, Lumina 2, AuraFlow); ModelSamplingSD3 is the same
    for networks that take it times 1000. A resolution-dependent shift gives way to this fixed one."""

    CATEGORY = "advanced/model"
    DISPLAY_NAME = "ModelSamplingAuraFlow"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        shift: float = Widget(1.73, ge=0.0, le=100.0, step=0.01)

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _flow_model(inputs.model, "ModelSamplingAuraFlow sets the shift of flow models")
        if model.family.comfy_multiplier != 1.0:
            raise NodeError(f"model: {model.name} is a {model.family.label} model, whose network takes the "
                            "noise level times 1000 as its timestep; ModelSamplingAuraFlow (multiplier 1) is "
                            "for networks that take it as it is: use ModelSamplingSD3")
        if inputs.shift <= 0:
            raise NodeError("shift: must be above 0")
        # a fixed shift in place of the model's own sampling (ComfyUI's node swaps it whole): no resolution-
        # dependent shift, no stretch to a terminal sigma
        config = model.scheduler_config
        changes = {"use_dynamic_shifting": False} if config.get("use_dynamic_shifting") else {}
        if config.get("shift_terminal"):
            changes["shift_terminal"] = None
        return (model.with_config(shift=float(inputs.shift), **changes),)


class ModelSamplingFlux(Node):
    """Fix a flow model's resolution-dependent shift for an image size (Flux): ``mu`` on the line from
    base_shift at 256 image tokens to max_shift at 4096 (a 1024x1024 image), at width x height / 256 tokens;
    sigmas are then ``exp(mu) / (exp(mu) + 1/t - 1)``. Without it Flux dev runs at max_shift (or, through
    a Scheduler given the latent, at the latent's own size, as FluxPipeline)."""

    CATEGORY = "advanced/model"
    DISPLAY_NAME = "ModelSamplingFlux"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        max_shift: float = Widget(1.15, ge=0.0, le=100.0, step=0.01)
        base_shift: float = Widget(0.5, ge=0.0, le=100.0, step=0.01)
        width: int = Widget(1024, ge=16, le=16384, step=8)
        height: int = Widget(1024, ge=16, le=16384, step=8)

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers.model_sampling import dynamic_mu

        model = _flow_model(inputs.model, "ModelSamplingFlux sets the shift of Flux-style models")
        line = {"use_dynamic_shifting": True, "time_shift_type": "exponential", "base_shift": inputs.base_shift,
                "max_shift": inputs.max_shift, "base_image_seq_len": 256, "max_image_seq_len": 4096}
        mu = dynamic_mu(line, inputs.width * inputs.height / 256)  # 8x8 pixels a latent, 2x2 latents a token
        # and ComfyUI's table of 10000 sigmas that goes with this sampling
        return (model.with_config(**line, mu=mu, sigma_table_size=10000),)


NODES = [CLIPSetLastLayer, ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow, ModelSamplingFlux]
