"""Upscale models: ComfyUI's UpscaleModelLoader and ImageUpscaleWithModel.

A model file lives in ``upscale_models/`` of any models folder and is read only as ``.safetensors`` (``.pth`` /
``.ckpt`` files are pickles, which can run code when loaded, and are refused with a message saying so). The
networks read here are the RRDB super-resolution networks of ESRGAN and Real-ESRGAN (RealESRGAN_x4plus,
x2plus, 4x-UltraSharp and the many community models of that architecture), in both key layouts users have:
the original ESRGAN one (``model.0``, ``model.1.sub.N.RDB1.conv1.0``, ...) and BasicSR's (``conv_first``,
``body.N.rdb1.conv1``, ...), and Real-ESRGAN's compact network (``body.N``: convolutions and PReLUs, then a
pixel shuffle). The architecture's sizes (features, blocks, growth channels, scale) are read from the tensors'
shapes.

Images are upscaled in overlapping tiles as ComfyUI does (512-pixel tiles, 32 pixels of overlap, blended
with linear ramps across each overlap; an image that fits one tile is run whole), so one network call sees
at most one tile; on a CUDA out-of-memory error the tile is halved, down to 128. The output size is bounded
before anything is allocated (``max_upscale_pixels`` in :mod:`graph_runtime.limits`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .model_store import PICKLE_SUFFIXES, file_identity, refuse_pickle
from .part_files import find_part, list_parts

if TYPE_CHECKING:  # the nodes are declared without torch; loading and running need it
    import torch

UPSCALE_MODEL = "UPSCALE_MODEL"
TILE, OVERLAP, MIN_TILE = 512, 32, 128


# ---- the network --------------------------------------------------------------------------------------------

def _rrdb_classes():
    """The RRDB network's modules (defined on first use, so declaring the nodes needs no torch)."""
    import torch
    from torch import nn

    def act(x):
        return nn.functional.leaky_relu(x, 0.2)

    class DenseBlock(nn.Module):
        """Five 3x3 convolutions, each seeing the block input and every earlier output; residual x 0.2."""

        def __init__(self, feat: int, grow: int) -> None:
            super().__init__()
            for i in range(5):
                out = feat if i == 4 else grow
                setattr(self, f"conv{i + 1}", nn.Conv2d(feat + i * grow, out, 3, 1, 1))

        def forward(self, x):
            outs = [x]
            for i in range(1, 5):
                outs.append(act(getattr(self, f"conv{i}")(torch.cat(outs, 1))))
            return self.conv5(torch.cat(outs, 1)) * 0.2 + x

    class RRDB(nn.Module):
        """Three dense blocks in a residual (x 0.2)."""

        def __init__(self, feat: int, grow: int) -> None:
            super().__init__()
            self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(feat, grow) for _ in range(3))

        def forward(self, x):
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        """ESRGAN's generator in BasicSR's names: ``unshuffle`` > 1 folds pixels into channels first
        (Real-ESRGAN's x2 and x1 models), each upsampling doubles the size (nearest, then a convolution)."""

        def __init__(self, in_ch: int, out_ch: int, feat: int, blocks: int, grow: int, upsamples: int,
                     unshuffle: int = 1) -> None:
            super().__init__()
            self.unshuffle = unshuffle
            self.conv_first = nn.Conv2d(in_ch * unshuffle ** 2, feat, 3, 1, 1)
            self.body = nn.Sequential(*(RRDB(feat, grow) for _ in range(blocks)))
            self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
            for i in range(upsamples):
                setattr(self, f"conv_up{i + 1}", nn.Conv2d(feat, feat, 3, 1, 1))
            self.upsamples = upsamples
            self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(feat, out_ch, 3, 1, 1)

        def forward(self, x):
            if self.unshuffle > 1:
                x = nn.functional.pixel_unshuffle(x, self.unshuffle)
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for i in range(self.upsamples):
                feat = act(getattr(self, f"conv_up{i + 1}")(nn.functional.interpolate(feat, scale_factor=2,
                                                                                    mode="nearest")))
            return self.conv_last(act(self.conv_hr(feat)))

    return RRDBNet


def _compact_class():
    """Real-ESRGAN's compact network (SRVGGNetCompact: realesr-general-x4v3, realesr-animevideov3)."""
    from torch import nn

    class Compact(nn.Module):
        """3x3 convolutions with PReLU, the last one making ``scale**2`` sub-pixels per channel (pixel
        shuffle), added to the nearest-upscaled input."""

        def __init__(self, channels: int, feat: int, convs: int, scale: int) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(channels, feat, 3, 1, 1), nn.PReLU(feat)]
            for _ in range(convs):
                layers += [nn.Conv2d(feat, feat, 3, 1, 1), nn.PReLU(feat)]
            layers.append(nn.Conv2d(feat, channels * scale ** 2, 3, 1, 1))
            self.body = nn.Sequential(*layers)
            self.scale = scale

        def forward(self, x):
            out = nn.functional.pixel_shuffle(self.body(x), self.scale)
            return out + nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")

    return Compact


@dataclass(eq=False)
class UpscaleModel:
    """The UPSCALE_MODEL value: a network that maps ``[B, C, H, W]`` in 0..1 to ``[B, C, H*scale, W*scale]``."""

    network: Any
    scale: int
    architecture: str
    name: str
    device: Any
    channels: int = 3


def _original_to_basicsr(state: dict) -> dict:
    """ESRGAN's original names (``model.N``) -> BasicSR's; the upsampling convolutions are every third
    layer after the trunk, then come the high-resolution and the last convolution."""
    convs = sorted({int(m[1]) for k in state if (m := re.fullmatch(r"model\.(\d+)\.weight", k))} - {0})
    if len(convs) < 2:
        raise ValueError("no output convolutions")
    *ups, hr, last = convs
    names = {0: "conv_first", hr: "conv_hr", last: "conv_last"} | {u: f"conv_up{i + 1}" for i, u in enumerate(ups)}
    out = {}
    blocks = {int(m[1]) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))}
    trunk = max(blocks) + 1 if blocks else 0
    for k, v in state.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", k):
            if int(m[1]) != trunk:
                raise ValueError(f"unexpected tensor {k}")
            out[f"conv_body.{m[2]}"] = v
        elif (m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", k)) and int(m[1]) in names:
            out[f"{names[int(m[1])]}.{m[2]}"] = v
        else:
            raise ValueError(f"unexpected tensor {k}")
    return out


def _is_compact(state: dict) -> bool:
    first, act = state.get("body.0.weight"), state.get("body.1.weight")
    return first is not None and first.ndim == 4 and act is not None and act.ndim == 1


def _build_compact(state: dict) -> tuple[Any, int, int]:
    convs = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"body\.(\d+)\.weight", k)))
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    channels, feat = first.shape[1], first.shape[0]
    scale = round((last.shape[0] / channels) ** 0.5)
    if scale < 1 or channels * scale ** 2 != last.shape[0] or (convs[-1] - 2) % 2:
        raise ValueError(f"a last convolution of {last.shape[0]} channels for {channels}-channel images")
    network = _compact_class()(channels, feat, (convs[-1] - 2) // 2, scale)
    network.load_state_dict(state, strict=True)
    return network, scale, int(channels)


def build(state: dict, name: str, what: str = "model_name") -> tuple[Any, int, str, int]:
    """(network with the weights, scale, architecture name, channels) of an ESRGAN-family state dict."""
    original = "model.0.weight" in state and any(k.startswith("model.1.sub.0.RDB1.") for k in state)
    if _is_compact(state):
        try:
            network, scale, channels = _build_compact(state)
        except (ValueError, KeyError, RuntimeError, IndexError) as exc:
            raise NodeError(f"{what}: {name!r} looks like a compact Real-ESRGAN model but does not load: "
                            f"{exc}") from exc
        return network.eval().requires_grad_(False), scale, "Real-ESRGAN compact (SRVGGNet)", channels
    if not original and not ("conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state):
        sample = ", ".join(list(state)[:4])
        raise NodeError(f"{what}: {name!r} is not an upscale model read here: only ESRGAN / Real-ESRGAN (RRDB and "
                        f"compact) networks are (its tensors: {sample}, ...)")
    try:
        if original:
            state = _original_to_basicsr(state)
        first, last = state["conv_first.weight"], state["conv_last.weight"]
        out_ch, feat, grow = last.shape[0], first.shape[0], state["body.0.rdb1.conv1.weight"].shape[0]
        unshuffle = {1: 1, 4: 2, 16: 4}.get(first.shape[1] // out_ch) if first.shape[1] % out_ch == 0 else None
        if unshuffle is None:
            raise ValueError(f"{first.shape[1]} input channels for {out_ch} output channels")
        blocks = len({int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.", k))})
        ups = len({k for k in state if re.fullmatch(r"conv_up\d+\.weight", k)})
        network = _rrdb_classes()(out_ch, out_ch, feat, blocks, grow, ups, unshuffle)
        network.load_state_dict(state, strict=True)
    except (ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise NodeError(f"{what}: {name!r} looks like an ESRGAN model but does not load: {exc}") from exc
    scale = 2 ** ups // unshuffle
    arch = "ESRGAN" if original else "Real-ESRGAN (RRDBNet)"
    return network.eval().requires_grad_(False), scale, arch, int(out_ch)


class UpscaleModelStore:
    """Loaded upscale models by file (path, mtime and size) and device, shared across runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, UpscaleModel] = {}

    def load(self, path: Path, name: str, device: Any) -> UpscaleModel:
        from safetensors.torch import load_file

        try:
            refuse_pickle(path)
        except NodeError as exc:
            raise NodeError(f"model_name: {exc}") from None
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            raise NodeError(f"model_name: {name!r} is not a .safetensors file")
        key = (str(path), file_identity(path), str(device))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                return hit
            try:
                state = load_file(str(path))
            except Exception as exc:  # safetensors raises its own error types for damaged headers
                raise NodeError(f"model_name: cannot read {name!r}: not a valid .safetensors file ({exc})") from exc
            state = {k.removeprefix("module."): v.float() for k, v in state.items()}
            network, scale, arch, channels = build(state, name)
            model = UpscaleModel(network.to(device), scale, arch, name, device, channels)
            for old in [k for k in self._entries if k[0] == key[0] and k[2] == key[2]]:
                del self._entries[old]  # a changed file replaces its older version
            self._entries[key] = model
            return model


# ---- tiled upscaling ----------------------------------------------------------------------------------------

def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every ``tile - overlap`` pixels, the last tile ending at the border."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _ramp(length: int, lead: int, trail: int, device: Any) -> torch.Tensor:
    """1 inside, rising linearly over the first ``lead`` and falling over the last ``trail`` pixels."""
    import torch

    w = torch.ones(length, device=device)
    if lead:
        w[:lead] = torch.arange(1, lead + 1, device=device) / (lead + 1)
    if trail:
        w[length - trail:] = torch.arange(trail, 0, -1, device=device) / (trail + 1)
    return w


def upscale_tiled(network: Callable, image: torch.Tensor, scale: int, tile: int = TILE, overlap: int = OVERLAP,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``network`` over ``image`` ``[B, C, H, W]`` in overlapping tiles, blended across each overlap; an image
    no larger than one tile is run whole. The output lives on the image's device."""
    import torch

    b, c, h, w = image.shape
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    if len(ys) == len(xs) == 1:
        out = network(image)
        if progress:
            progress(1, 1)
        return out
    out = torch.zeros(b, c, h * scale, w * scale, device=image.device)
    weight = torch.zeros(1, 1, h * scale, w * scale, device=image.device)
    done, total = 0, len(ys) * len(xs)
    th, tw = min(tile, h), min(tile, w)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            part = network(image[:, :, y:y + th, x:x + tw]).to(out.dtype)
            # blend only where a neighbour overlaps: over the shared pixels, scaled to the output
            top = (ys[i - 1] + th - y) * scale if i else 0
            left = (xs[j - 1] + tw - x) * scale if j else 0
            bottom = (y + th - ys[i + 1]) * scale if i + 1 < len(ys) else 0
            right = (x + tw - xs[j + 1]) * scale if j + 1 < len(xs) else 0
            mask = (_ramp(th * scale, top, bottom, image.device)[:, None]
                    * _ramp(tw * scale, left, right, image.device)[None, :])
            region = (slice(None), slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[region] += part * mask
            weight[region] += mask
            done += 1
            if progress:
                progress(done, total)
    return out / weight


def upscale_image(model: UpscaleModel, image: torch.Tensor, ctx: Any = None, tile: int = TILE,
                  overlap: int = OVERLAP) -> torch.Tensor:
    """An IMAGE ``[B, H, W, C]`` upscaled by the model (clamped to 0..1, on the CPU), within the output limit;
    on a CUDA out-of-memory error the tile is halved down to 128 pixels, as ComfyUI does."""
    import torch

    from graph_runtime.limits import LIMITS

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != model.channels:
        got = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeError(f"image: expected an IMAGE [batch, height, width, {model.channels}], got {got}")
    b, h, w, _ = image.shape
    pixels = b * h * w * model.scale ** 2
    if pixels > LIMITS.max_upscale_pixels:
        raise NodeError(f"image: {b} x {w}x{h} upscaled {model.scale}x is {pixels:,} output pixels, more than the "
                        f"limit of {LIMITS.max_upscale_pixels:,} (max_upscale_pixels); use a smaller image or "
                        "batch, or raise GRAPH_RUNTIME_LIMIT_MAX_UPSCALE_PIXELS")
    x = image.movedim(-1, 1).to(model.device, torch.float32)

    def run(part: torch.Tensor) -> torch.Tensor:
        if ctx is not None:
            ctx.check_interrupted()
        return model.network(part)

    progress = getattr(ctx, "progress", None)
    while True:
        try:
            with torch.inference_mode():
                out = upscale_tiled(run, x, model.scale, tile, overlap, progress)
            break
        except torch.OutOfMemoryError:
            if tile // 2 < MIN_TILE:
                raise NodeError(f"image: out of device memory even with {tile}-pixel tiles") from None
            tile //= 2
            torch.cuda.empty_cache()
    return out.clamp(0, 1).movedim(1, -1).float().cpu()


# ---- nodes --------------------------------------------------------------------------------------------------

def _extra(ctx: Any) -> list:
    return getattr(ctx.paths, "models", []) or []


list_upscale_models = partial(list_parts, "upscale_model", suffixes=(".safetensors", *PICKLE_SUFFIXES))


class UpscaleModelLoader(Node):
    """Load an upscale model from upscale_models/ (ESRGAN / Real-ESRGAN networks, .safetensors only)."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load Upscale Model"

    class Inputs(NodeInputs):
        model_name: str = Widget("", choices=list_upscale_models,
                                 tooltip="an upscale model .safetensors file in upscale_models/")

    OUTPUTS = (Output(UPSCALE_MODEL, UPSCALE_MODEL),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from .device import resolve_device

        path = find_part("upscale_model", inputs.model_name, "model_name", _extra(ctx))
        store = ctx.service(UpscaleModelStore)
        return (store.load(path, inputs.model_name, resolve_device("auto")),)

    @classmethod
    def fingerprint(cls, literals: dict, ctx: Any) -> Any:
        try:
            return file_identity(find_part("upscale_model", str(literals.get("model_name", "")), "model_name",
                                           _extra(ctx)))
        except NodeError:
            return None


class ImageUpscaleWithModel(Node):
    """Upscale an image with an upscale model, in overlapping 512-pixel tiles (an image that fits one tile is
    run whole); the output is clamped to 0..1."""

    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Upscale Image (using Model)"

    class Inputs(NodeInputs):
        upscale_model: Any = Link(UPSCALE_MODEL)
        image: Any = Link("IMAGE")

    OUTPUTS = (Output("IMAGE", "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        if not isinstance(inputs.upscale_model, UpscaleModel):
            raise NodeError(f"upscale_model: expected an UPSCALE_MODEL (from UpscaleModelLoader), got "
                            f"{type(inputs.upscale_model).__name__}")
        return (upscale_image(inputs.upscale_model, inputs.image, ctx),)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]
