"""ControlNet: ComfyUI's ControlNetLoader, ControlNetApply and ControlNetApplyAdvanced over diffusers'
``ControlNetModel`` (SD1.x, SD2.x, SDXL) and ``SD3ControlNetModel`` (SD3.x).

A ControlNet reads the noisy latents, the prompt and a hint image and adds residuals to the UNet's down and
middle blocks (an SD3 ControlNet: to the MMDiT's blocks, its hint VAE-encoded with ApplyAdvanced's vae). Applying one attaches a :class:`ControlApplication` (the hint, strength, start / end of the
schedule, and any ControlNet applied before it, whose residuals add up) to every conditioning entry; the
sampler binds it to the model (:meth:`ControlApplication.bind`) and the guidance calls it for each batch of
entries that share it (:mod:`schedulers.guidance`). As in ComfyUI the hint is resized (centre crop, nearest)
to the evaluated latents' size times the ControlNet's own downscale (8 for real ones), and the range is
checked against the network timestep at ``start_percent`` / ``end_percent`` of the model's noise range.

ControlNets live in ComfyUI's ``controlnet/`` folder: diffusers component folders (``config.json`` +
``.safetensors``) or single files -- UNet ControlNets in the original (``control_model.*``) or diffusers
layout, SD3 ones in diffusers' -- configured by the first fitting config: ControlNet folders beside them,
then those shipped in ``models/configs`` (``controlnet-sd15``, ``controlnet-sdxl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .guidance import check_conditioning
from .loaders import _fingerprint, _load
from .types import Conditioning, ModelBundle, VAEBundle, map_entries

if TYPE_CHECKING:
    import torch

CONTROL_NET = "CONTROL_NET"
CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
SHIPPED_CONFIGS = ("controlnet-sd15", "controlnet-sdxl")


@dataclass(eq=False)
class ControlNetBundle:
    """A loaded ControlNet (the CONTROL_NET port value): a diffusers ``ControlNetModel`` (UNet families) or
    ``SD3ControlNetModel`` (SD3, whose hint is VAE latents) and the model family it was trained for."""

    network: Any
    family: Any
    name: str

    @property
    def latent_hint(self) -> bool:
        """Whether the hint goes in as VAE latents (SD3 ControlNets) rather than pixels."""
        return not hasattr(self.network.config, "conditioning_embedding_out_channels")

    @property
    def hint_factor(self) -> int:
        """Hint pixels per latent pixel: the conditioning embedding halves the size once per level after the
        first (8 for real ControlNets); for a latent hint, the VAE's factor (see :meth:`BoundControl._hint`)."""
        if self.latent_hint:
            return 8
        return 2 ** (len(self.network.config.conditioning_embedding_out_channels) - 1)


def check_control_net(value: Any) -> ControlNetBundle:
    if not isinstance(value, ControlNetBundle):
        raise NodeError(f"control_net: expected a CONTROL_NET (from ControlNetLoader), got {type(value).__name__}")
    return value


def hint_of(image: Any) -> torch.Tensor:
    """An IMAGE [B, H, W, C] as the ControlNet's hint [B, 3, H, W] in 0..1 (float32, CPU)."""
    import torch

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4) \
            or 0 in image.shape:
        raise NodeError("image: expected an IMAGE tensor [batch, height, width, channels]")
    hint = image[..., :3].movedim(-1, 1).float()
    return hint.expand(-1, 3, -1, -1) if hint.shape[1] == 1 else hint


def upscale_centre(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``t`` [B, C, h, w] cropped around its centre to the aspect of ``width`` x ``height`` and resized there
    with nearest-exact (ComfyUI's ``common_upscale(..., "nearest-exact", "center")``)."""
    import torch

    if tuple(t.shape[-2:]) == (height, width):
        return t
    old_h, old_w = t.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    s = t.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)
    return torch.nn.functional.interpolate(s, size=(height, width), mode="nearest-exact")


@dataclass(eq=False)
class ControlApplication:
    """One ControlNet applied with a hint (ComfyUI's ControlNet copy after ``set_cond_hint``)."""

    net: ControlNetBundle
    hint: torch.Tensor
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlApplication | None = None
    vae: Any = None

    def chain(self) -> list[ControlApplication]:
        """This application and those before it, the first applied first."""
        out, app = [], self
        while app is not None:
            out.append(app)
            app = app.previous
        return out[::-1]

    def bind(self, model: ModelBundle, batch: int) -> BoundControl:
        """The callable the guidance uses for ``model`` and a latent batch of ``batch`` (the sampler makes one
        per application and run, so entries sharing this application share one ControlNet call)."""
        return BoundControl(self.chain(), model, batch)


class BoundControl:
    """The ControlNet residuals of a chain of applications for a batch of entries:
    ``control(x, t, inputs)`` -> the UNet's ``down_block_additional_residuals`` and
    ``mid_block_additional_residual`` (summed over the chain; None when none is active at ``t``)."""

    def __init__(self, chain: list[ControlApplication], model: ModelBundle, batch: int):
        from schedulers.model_sampling import model_sampling

        for app in chain:
            if app.net.family.name != model.family.name:
                raise NodeError(f"control_net: {app.net.name} is a {app.net.family.label} ControlNet; the model "
                                f"{model.name} is {model.family.label}: load a ControlNet made for it")
            net = app.net.network
            if net.device != model.device or net.dtype != model.dtype:
                net.to(device=model.device, dtype=model.dtype)
        ms = model_sampling(model.scheduler_config)
        self.steps = [(app, ms.percent_timestep(app.start_percent), ms.percent_timestep(app.end_percent))
                      for app in chain]
        self.networks = len(chain)
        self.batch = batch
        self._hints: dict[tuple, torch.Tensor] = {}

    def _hint(self, app: ControlApplication, x: torch.Tensor) -> torch.Tensor:
        f = app.vae.downscale if app.net.latent_hint else app.net.hint_factor
        key = (id(app), tuple(x.shape))
        if key not in self._hints:
            hint = upscale_centre(app.hint, x.shape[2] * f, x.shape[3] * f)
            if app.net.latent_hint:
                hint = _encode_hint(app, hint)
            if hint.shape[0] == 1:
                hint = hint.expand(x.shape[0], -1, -1, -1)
            else:  # hint i for latent i (cycling when there are fewer), for every entry of the batch
                per = hint[: self.batch]
                per = per.repeat(-(-self.batch // per.shape[0]), 1, 1, 1)[: self.batch]
                hint = per.repeat(max(1, x.shape[0] // self.batch), 1, 1, 1)
            self._hints[key] = hint.to(device=x.device, dtype=x.dtype)
        return self._hints[key]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: dict) -> dict | None:
        now = float(t.reshape(-1)[0]) if any(hi != float("inf") or lo != float("-inf")
                                             for _, hi, lo in self.steps) else 0.0
        down = mid = None
        for app, high, low in self.steps:
            if not low <= now <= high:
                continue
            if app.net.latent_hint:
                blocks = _sd3_blocks(app, x, t, inputs, self._hint(app, x))
                down = blocks if down is None else [p + c for p, c in zip(down, blocks, strict=True)]
                continue
            kwargs = {"added_cond_kwargs": inputs["added_cond_kwargs"]} if "added_cond_kwargs" in inputs else {}
            d, m = app.net.network(x, t, encoder_hidden_states=inputs["encoder_hidden_states"],
                                   controlnet_cond=self._hint(app, x), conditioning_scale=app.strength,
                                   return_dict=False, **kwargs)
            if down is None:
                down, mid = list(d), m
            else:
                down, mid = [p + c for p, c in zip(down, d, strict=True)], mid + m
        if down is None:
            return None
        if mid is None:
            return {"block_controlnet_hidden_states": down}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _encode_hint(app: ControlApplication, hint: torch.Tensor) -> torch.Tensor:
    """An SD3 ControlNet's hint as latents: the VAE's mode of the image in -1..1, shifted (except for
    ControlNets trained without the shift: those with zero pooled projections) and scaled, as diffusers'
    SD3 ControlNet pipeline encodes it."""
    import torch

    vae = app.vae
    shift = 0.0 if app.net.network.config.force_zeros_for_pooled_projection else vae.shift_factor
    with torch.inference_mode():
        z = vae.vae.encode(hint.to(device=vae.device, dtype=vae.dtype) * 2 - 1).latent_dist.mode()
    return (z - shift) * vae.scaling_factor


def _sd3_blocks(app: ControlApplication, x: torch.Tensor, t: torch.Tensor, inputs: dict,
                hint: torch.Tensor) -> list:
    """An SD3 ControlNet's per-block hidden states (times the strength), as the SD3 ControlNet pipeline
    calls it: zero pooled projections where the ControlNet was trained so, no text where it has none."""
    import torch

    cfg = app.net.network.config
    pooled = inputs["pooled_projections"]
    if cfg.force_zeros_for_pooled_projection:
        pooled = torch.zeros_like(pooled)
    text = inputs["encoder_hidden_states"] if cfg.joint_attention_dim is not None else None
    return list(app.net.network(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=text,
                                pooled_projections=pooled, controlnet_cond=hint, conditioning_scale=app.strength,
                                return_dict=False)[0])


def apply_control(cond: Conditioning, net: ControlNetBundle, hint: torch.Tensor, strength: float,
                  start: float, end: float, to_uncond: bool, shared: dict, vae: Any = None) -> Conditioning:
    """Every entry with this ControlNet after its own one; entries with the same previous ControlNet share
    one application (``shared``: previous -> application), so they run in one ControlNet call."""
    from dataclasses import replace

    def attach(e: Conditioning) -> Conditioning:
        key = id(e.control)
        if key not in shared:
            shared[key] = ControlApplication(net, hint, strength, start, end, previous=e.control, vae=vae)
        return replace(e, control=shared[key], control_apply_to_uncond=to_uncond)

    return map_entries(cond, attach)


def apply_to_both(inputs: Any) -> tuple[Conditioning, Conditioning]:
    """ControlNetApplyAdvanced's work: the ControlNet on every entry of positive and negative."""
    positive = check_conditioning(inputs.positive, "positive")
    negative = check_conditioning(inputs.negative, "negative")
    net = check_control_net(inputs.control_net)
    hint = hint_of(inputs.image)
    if inputs.strength == 0:
        return (positive, negative)
    if net.latent_hint and not isinstance(inputs.vae, VAEBundle):
        raise NodeError(f"vae: {net.name} ({net.family.label}) reads its hint as latents: connect the model's "
                        "VAE")
    shared: dict = {}
    args = (net, hint, inputs.strength, inputs.start_percent, inputs.end_percent, False, shared, inputs.vae)
    return (apply_control(positive, *args), apply_control(negative, *args))


class ControlNetApplyAdvanced(Node):
    """Guide sampling with a ControlNet and a hint image (edges, depth, pose, ...) on both conditionings,
    at strength and from start_percent to end_percent of the schedule."""

    CATEGORY = "conditioning/controlnet"
    DISPLAY_NAME = "Apply ControlNet"

    class Inputs(NodeInputs):
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        control_net: Any = Link(CONTROL_NET)
        image: Any = Link("IMAGE")
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
        start_percent: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
        end_percent: float = Widget(1.0, ge=0.0, le=1.0, step=0.001)
        vae: Any = Link("VAE", optional=True, tooltip="for ControlNets whose hint is a latent (SD3)")

    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return apply_to_both(inputs)


class ControlNetApplySD3(Node):
    """ControlNetApplyAdvanced with the VAE required and before the image (ComfyUI's older SD3 node)."""

    CATEGORY = "conditioning/controlnet"
    DISPLAY_NAME = "Apply Controlnet with VAE"

    class Inputs(NodeInputs):
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        control_net: Any = Link(CONTROL_NET)
        vae: Any = Link("VAE")
        image: Any = Link("IMAGE")
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
        start_percent: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
        end_percent: float = Widget(1.0, ge=0.0, le=1.0, step=0.001)

    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return apply_to_both(inputs)


class ControlNetApply(Node):
    """The older ControlNet node: one conditioning (the negative's entries borrow it when sampling), full
    schedule."""

    CATEGORY = "conditioning/controlnet"
    DISPLAY_NAME = "Apply ControlNet (OLD)"

    class Inputs(NodeInputs):
        conditioning: Any = Link("CONDITIONING")
        control_net: Any = Link(CONTROL_NET)
        image: Any = Link("IMAGE")
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        cond = check_conditioning(inputs.conditioning, "conditioning")
        net = check_control_net(inputs.control_net)
        hint = hint_of(inputs.image)
        if inputs.strength == 0:
            return (cond,)
        if net.latent_hint:
            raise NodeError(f"control_net: {net.name} ({net.family.label}) needs a VAE for its hint: use Apply "
                            "ControlNet (ControlNetApplyAdvanced) with the vae input")
        return (apply_control(cond, net, hint, inputs.strength, 0.0, 1.0, True, {}),)


# ---- loading --------------------------------------------------------------------------------------------------


def _list_controlnets() -> list[str]:
    from .part_files import list_parts

    return list_parts("controlnet")


class ControlNetLoader(Node):
    """Load a ControlNet from ComfyUI's controlnet/ folder (a diffusers folder or a single .safetensors)."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load ControlNet Model"

    class Inputs(NodeInputs):
        control_net_name: str = Widget("", choices=partial(_list_controlnets))

    OUTPUTS = (Output(CONTROL_NET, "CONTROL_NET"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (_load(ctx, "controlnet", inputs.control_net_name, "control_net_name").controlnet,)

    fingerprint = _fingerprint("controlnet", "control_net_name")


def family_of(config: dict, what: str) -> Any:
    """The model family a ControlNet config is for (its UNet-like keys say: SDXL's text-time embedding,
    SD2's 1024-wide cross attention)."""
    from . import families

    name = config.get("_class_name")
    if name == "SD3ControlNetModel":
        return families.by_name("sd3")
    if name not in (None, "ControlNetModel"):
        raise NodeError(f"{what}: a {name} is not a ControlNet this runtime runs (diffusers ControlNetModel: "
                        "SD1.x, SD2.x and SDXL; SD3ControlNetModel: SD3.x)")
    return families.for_network_config({**config, "_class_name": "UNet2DConditionModel"})


def config_candidates(path: Path) -> list[Path]:
    """Folders with a ControlNet config.json to configure a single file with: the ControlNet folders in
    the file's own folder, then the shipped ones."""
    out = [p for p in sorted(path.parent.iterdir()) if p.is_dir() and (p / "config.json").is_file()]
    return out + [CONFIGS / n for n in SHIPPED_CONFIGS if (CONFIGS / n / "config.json").is_file()]


def load_controlnet(path: Path, device: torch.device, dtype: torch.dtype, name: str) -> ControlNetBundle:
    """A ControlNet from a diffusers component folder or a single file (see :func:`_load_single_file`)."""
    import diffusers

    from .families.base import read_json

    if path.is_dir():
        config = read_json(path / "config.json")
        family = family_of(config, name)
        cls = getattr(diffusers, str(config.get("_class_name") or "ControlNetModel"))
        try:
            net = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True,
                                                  use_safetensors=True, low_cpu_mem_usage=False)
        except (OSError, ValueError) as exc:
            raise NodeError(f"cannot load {name}: {exc}") from exc
    else:
        net, family = _load_single_file(path, dtype, name)
    net.to(device).eval()
    return ControlNetBundle(net, family, name)


def _load_single_file(path: Path, dtype: torch.dtype, name: str):
    """A ControlNet file configured by the first candidate config whose parameter names and shapes it has:
    a ControlNetModel's in either layout, an SD3ControlNetModel's in diffusers' names."""
    import diffusers
    import torch
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import load_file

    from .families.base import read_json

    try:
        raw = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise NodeError(f"cannot read {name}: not a valid .safetensors file ({exc})") from exc
    tried = []
    for folder in config_candidates(path):
        config = read_json(folder / "config.json")
        kind = config.get("_class_name")
        if kind not in ("ControlNetModel", "SD3ControlNetModel"):
            continue
        cls = getattr(diffusers, kind)
        state = convert_controlnet_checkpoint(dict(raw), config) if kind == "ControlNetModel" else raw
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in cls.from_config(config).state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        if have != want:
            missing = sorted(set(want) - set(have))
            wrong = [k for k in want if k in have and have[k] != want[k]]
            tried.append(f"{folder.name} ({len(missing)} missing, {len(wrong)} of other shapes"
                         + (f", e.g. {wrong[0]} {have[wrong[0]]} vs {want[wrong[0]]}" if wrong else "") + ")")
            continue
        net = cls.from_config(config)
        net.load_state_dict(state, strict=True)
        return net.to(dtype), family_of(config, name)
    raise NodeError(f"control_net_name: {name} is no ControlNet that a known configuration fits; tried "
                    + (", ".join(tried) or "none"))


NODES = [ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, ControlNetApplySD3]
