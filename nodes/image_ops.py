"""ComfyUI's image, mask and latent resize nodes, and the small image/mask operations workflows use
between them (EmptyImage, ImageBatch, ImageInvert, ImageToMask, MaskToImage, InvertMask, ImageCompositeMasked,
Canny).

Resizing follows ComfyUI's arithmetic exactly: output sizes rounded with Python's ``round``, the centre crop
taken before resizing, torch's ``interpolate`` for nearest-exact / bilinear / area / bicubic, Pillow's Lanczos on
8-bit copies for lanczos, and a spherical interpolation of latent vectors for bislerp. Every output size is
checked against :mod:`graph_runtime.limits` before anything is allocated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import create_model

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from graph_runtime.limits import LIMITS
from graph_runtime.node import autogrow_fields, dynamic_combo_choice, dynamic_combo_fields

from .latents import MAX_SIZE
from .types import IMAGE, LATENT, MASK
from .utility import check_image

if TYPE_CHECKING:
    import torch

IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROPS = ("disabled", "center")
LATENT_FACTOR = 8  # ComfyUI's LatentUpscale counts widths in pixels of an 8x latent


# --- resizing --------------------------------------------------------------------------------------------

def center_crop_box(old_w: int, old_h: int, width: int, height: int) -> tuple[int, int]:
    """How many columns (x) and rows (y) to cut from each side so the source takes the target's aspect."""
    old_aspect, new_aspect = old_w / old_h, width / height
    if old_aspect > new_aspect:
        return round((old_w - old_w * (new_aspect / old_aspect)) / 2), 0
    if old_aspect < new_aspect:
        return 0, round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return 0, 0


def resize(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``height`` x ``width`` (ComfyUI's common_upscale); sizes are checked by the
    caller."""
    import torch

    if crop == "center":
        old_h, old_w = samples.shape[-2:]
        x, y = center_crop_box(old_w, old_h, width, height)
        samples = samples[..., y:old_h - y, x:old_w - x]
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos filter, on 8-bit copies of each image (values clipped, then truncated, as ComfyUI)."""
    import numpy as np
    import torch
    from PIL import Image

    channels = samples.shape[1]
    if channels not in (1, 3, 4):
        raise NodeError(f"upscale_method: lanczos works on 1, 3 or 4 channels, got {channels}")
    out = []
    for image in samples:
        arr = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
        pil = Image.fromarray(arr[0] if channels == 1 else np.moveaxis(arr, 0, -1))
        back = np.asarray(pil.resize((width, height), resample=Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(back[None] if channels == 1 else np.moveaxis(back, -1, 0).copy()))
    return torch.stack(out).to(samples.device, samples.dtype)


def _taps(n_old: int, n_new: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``n_new`` output positions: the lower and upper source index and the upper's weight, where
    bilinear (half-pixel) resizing samples the source, edges clamped."""
    import torch
    import torch.nn.functional as F

    ramp = torch.arange(n_old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    position = F.interpolate(ramp, size=(1, n_new), mode="bilinear").reshape(-1)
    upper_ramp = ramp + 1
    upper_ramp[..., -1] = n_old - 1
    upper = F.interpolate(upper_ramp, size=(1, n_new), mode="bilinear").reshape(-1).to(torch.int64)
    return position.to(torch.int64), upper, position - position.floor()


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rows of ``a`` towards rows of ``b`` ([N, C]) by ``t`` ([N, 1]): the direction turns on the great circle,
    the length is interpolated linearly. Same directions keep ``a``; opposite ones fall back to a lerp."""
    import torch

    len_a, len_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(len_a == 0, torch.zeros_like(a), a / len_a)
    unit_b = torch.where(len_b == 0, torch.zeros_like(b), b / len_b)
    cos = (unit_a * unit_b).sum(-1)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    t1 = t.squeeze(-1)
    turned = (torch.sin((1 - t1) * angle) / sin)[:, None] * unit_a + (torch.sin(t1 * angle) / sin)[:, None] * unit_b
    out = turned * (len_a * (1 - t) + len_b * t)
    same = cos > 1 - 1e-5
    opposite = cos < 1e-5 - 1
    out[same] = a[same]
    out[opposite] = (a * (1 - t) + b * t)[opposite]
    return out


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """ComfyUI's bislerp: per-pixel channel vectors interpolated spherically, first along the width, then
    along the height, at the positions bilinear resizing uses."""
    dtype = samples.dtype
    x = samples.float()
    n, c, h, _ = x.shape
    lo, hi, t = _taps(x.shape[-1], width, x.device)
    rows_a = x[..., lo].movedim(1, -1).reshape(-1, c)
    rows_b = x[..., hi].movedim(1, -1).reshape(-1, c)
    weights = t.repeat(n * h).reshape(-1, 1)
    x = _slerp(rows_a, rows_b, weights).reshape(n, h, width, c).movedim(-1, 1)
    lo, hi, t = _taps(h, height, x.device)
    rows_a = x[:, :, lo, :].movedim(1, -1).reshape(-1, c)
    rows_b = x[:, :, hi, :].movedim(1, -1).reshape(-1, c)
    weights = t.repeat_interleave(width).repeat(n).reshape(-1, 1)
    return _slerp(rows_a, rows_b, weights).reshape(n, height, width, c).movedim(-1, 1).to(dtype)


def check_image_size(width: int, height: int, batch: int, what: str) -> None:
    """Refuse an image batch larger than the limits before it is made."""
    if width < 1 or height < 1:
        raise NodeError(f"{what}: the result would be {width}x{height} pixels; it needs at least 1x1")
    if width * height > LIMITS.max_image_pixels:
        raise NodeError(f"{what}: {width}x{height} is {width * height:,} pixels per image, over the limit of "
                        f"{LIMITS.max_image_pixels:,} (max_image_pixels)")
    if width * height * batch > LIMITS.max_image_total_pixels:
        raise NodeError(f"{what}: {batch} images of {width}x{height} are {width * height * batch:,} pixels, over "
                        f"the limit of {LIMITS.max_image_total_pixels:,} (max_image_total_pixels)")


def scale_image(image: torch.Tensor, width: int, height: int, method: str, crop: str, what: str) -> torch.Tensor:
    check_image_size(width, height, image.shape[0], what)
    return resize(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageScale(Node):
    """Resize images to a width and height; 0 for one of them keeps the aspect ratio. crop "center" cuts the
    source to the target's aspect first."""

    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Upscale Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        upscale_method: Literal[IMAGE_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
        width: int = Widget(512, ge=0, le=MAX_SIZE, step=1)
        height: int = Widget(512, ge=0, le=MAX_SIZE, step=1)
        crop: Literal[CROPS] = Widget("disabled")  # type: ignore[valid-type]

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        width, height = inputs.width, inputs.height
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (scale_image(image, width, height, inputs.upscale_method, inputs.crop, "width / height"),)


class ImageScaleBy(Node):
    """Resize images by a factor (sizes rounded)."""

    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Upscale Image By"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        upscale_method: Literal[IMAGE_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
        scale_by: float = Widget(1.0, ge=0.01, le=8.0, step=0.01)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        h, w = image.shape[1:3]
        width, height = round(w * inputs.scale_by), round(h * inputs.scale_by)
        return (scale_image(image, width, height, inputs.upscale_method, "disabled", "scale_by"),)


class ImageScaleToTotalPixels(Node):
    """Resize images to about ``megapixels`` x 1024 x 1024 pixels, keeping the aspect ratio; each side rounded
    to a multiple of resolution_steps."""

    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Scale Image to Total Pixels"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        upscale_method: Literal[IMAGE_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
        megapixels: float = Widget(1.0, ge=0.01, le=16.0, step=0.01)
        resolution_steps: int = Widget(1, ge=1, le=256, advanced=True)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        h, w = image.shape[1:3]
        steps = inputs.resolution_steps
        scale = (inputs.megapixels * 1024 * 1024 / (w * h)) ** 0.5
        width, height = round(w * scale / steps) * steps, round(h * scale / steps) * steps
        return (scale_image(image, int(width), int(height), inputs.upscale_method, "disabled",
                            "megapixels / resolution_steps"),)


def check_latent(latent: Any, what: str = "samples") -> torch.Tensor:
    import torch

    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise NodeError(f"{what}: expected a LATENT ({{'samples': tensor}})")
    s = latent["samples"]
    if s.ndim != 4:
        raise NodeError(f"{what}: expected a latent tensor [batch, channels, h, w], got shape {list(s.shape)}")
    return s


def scale_latent(latent: dict, width: int, height: int, method: str, crop: str, what: str) -> dict:
    """``latent`` with its samples resized to ``width`` x ``height`` latent pixels (other keys kept)."""
    samples = check_latent(latent)
    pixels = width * height * LATENT_FACTOR**2 * samples.shape[0]
    if width < 1 or height < 1:
        raise NodeError(f"{what}: the result would be {width}x{height} latent pixels; it needs at least 1x1")
    if pixels > LIMITS.max_latent_pixels:
        raise NodeError(f"{what}: {samples.shape[0]} latents of {width * LATENT_FACTOR}x{height * LATENT_FACTOR} "
                        f"image pixels are {pixels:,}, over the limit of {LIMITS.max_latent_pixels:,} "
                        "(max_latent_pixels)")
    return {**latent, "samples": resize(samples, width, height, method, crop)}


class LatentUpscale(Node):
    """Resize latents to an image width and height (pixels; at least 64); 0 for one of them keeps the aspect
    ratio."""

    CATEGORY = "latent"
    DISPLAY_NAME = "Upscale Latent"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        upscale_method: Literal[LATENT_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
        width: int = Widget(512, ge=0, le=MAX_SIZE, step=8)
        height: int = Widget(512, ge=0, le=MAX_SIZE, step=8)
        crop: Literal[CROPS] = Widget("disabled")  # type: ignore[valid-type]

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        samples = check_latent(inputs.samples)
        width, height = inputs.width, inputs.height
        if width == 0 and height == 0:
            return (inputs.samples,)
        h, w = samples.shape[-2:]
        if width == 0:
            height = max(64, height)
            width = max(64, round(w * height / h))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(h * width / w))
        else:
            width, height = max(64, width), max(64, height)
        return (scale_latent(inputs.samples, width // LATENT_FACTOR, height // LATENT_FACTOR,
                             inputs.upscale_method, inputs.crop, "width / height"),)


class LatentUpscaleBy(Node):
    """Resize latents by a factor (sizes rounded)."""

    CATEGORY = "latent"
    DISPLAY_NAME = "Upscale Latent By"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        upscale_method: Literal[LATENT_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
        scale_by: float = Widget(1.5, ge=0.01, le=8.0, step=0.01)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        samples = check_latent(inputs.samples)
        h, w = samples.shape[-2:]
        width, height = round(w * inputs.scale_by), round(h * inputs.scale_by)
        return (scale_latent(inputs.samples, width, height, inputs.upscale_method, "disabled", "scale_by"),)


# --- ResizeImageMaskNode ---------------------------------------------------------------------------------

def _crop_widget() -> Any:
    return Widget("center", choices=CROPS, tooltip="How to handle aspect ratio mismatch: 'disabled' stretches to "
                  "fit, 'center' crops to maintain aspect ratio.")


def _size_widget(tooltip: str) -> Any:
    return Widget(512, ge=0, le=MAX_SIZE, step=1, tooltip=tooltip)


RESIZE_TYPES: dict[str, dict[str, tuple]] = {
    "scale dimensions": {
        "width": (int, _size_widget("Target width in pixels. Set to 0 to auto-calculate from height while "
                                    "preserving aspect ratio.")),
        "height": (int, _size_widget("Target height in pixels. Set to 0 to auto-calculate from width while "
                                     "preserving aspect ratio.")),
        "crop": (str, _crop_widget()),
    },
    "scale by multiplier": {
        "multiplier": (float, Widget(1.0, ge=0.01, le=8.0, step=0.01,
                                     tooltip="Scale factor (e.g., 2.0 doubles size, 0.5 halves size).")),
    },
    "scale longer dimension": {
        "longer_size": (int, _size_widget("The longer edge will be resized to this value. Aspect ratio is "
                                          "preserved.")),
    },
    "scale shorter dimension": {
        "shorter_size": (int, _size_widget("The shorter edge will be resized to this value. Aspect ratio is "
                                           "preserved.")),
    },
    "scale width": {
        "width": (int, _size_widget("Target width in pixels. Height auto-adjusts to preserve aspect ratio.")),
    },
    "scale height": {
        "height": (int, _size_widget("Target height in pixels. Width auto-adjusts to preserve aspect ratio.")),
    },
    "scale total pixels": {
        "megapixels": (float, Widget(1.0, ge=0.01, le=16.0, step=0.01, tooltip="Target total megapixels (e.g., "
                                     "1.0 ≈ 1024×1024). Aspect ratio is preserved.")),
        "multiple": (int, Widget(1, ge=1, le=MAX_SIZE, step=1, tooltip="Round width and height to the nearest "
                                 "multiple of this number.")),
    },
    "match size": {
        "match": (Any, Link("IMAGE,MASK", tooltip="Resize input to match the dimensions of this reference image "
                            "or mask.")),
        "crop": (str, _crop_widget()),
    },
    "scale to multiple": {
        "multiple": (int, Widget(8, ge=1, le=MAX_SIZE, step=1, tooltip="Resize so width and height are divisible "
                                 "by this number. Useful for latent alignment (e.g., 8 or 64).")),
    },
}


def resize_image_or_mask(x: torch.Tensor, width: int, height: int, method: str, crop: str, what: str) -> torch.Tensor:
    """Resize an IMAGE [B, H, W, C] or a MASK [B, H, W] (bounded by the limits first)."""
    check_image_size(width, height, x.shape[0], what)
    if x.ndim == 4:
        return resize(x.movedim(-1, 1), width, height, method, crop).movedim(1, -1)
    return resize(x[:, None], width, height, method, crop)[:, 0]


def _edge_sizes(w: int, h: int, size: int, longer: bool) -> tuple[int, int]:
    """ComfyUI's longer/shorter-edge sizes: that edge becomes ``size``, the other follows the aspect."""
    if h == w:
        return size, size
    if (h > w) == longer:
        return round(w / h * size), size
    return size, round(h / w * size)


class ResizeImageMaskNode(Node):
    """Resize an image or a mask by one of ComfyUI's rules: exact dimensions, a factor, the longer or shorter
    edge, a width or height, total pixels, another image's size, or down to a multiple."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Resize Image/Mask"

    Inputs = create_model(
        "ResizeImageMaskNodeInputs", __base__=NodeInputs,
        input=(Any, Link("IMAGE,MASK")),
        **dynamic_combo_fields("resize_type", RESIZE_TYPES, tooltip="Select how to resize: by exact dimensions, "
                               "scale factor, matching another image, etc."),
        scale_method=(Literal[IMAGE_METHODS], Widget("area", tooltip="Interpolation algorithm. 'area' is best for "
                                                     "downscaling, 'lanczos' for upscaling, 'nearest-exact' for "
                                                     "pixel art.")),
    )

    OUTPUTS = (Output("IMAGE,MASK", "resized"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        x = inputs.input
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            raise NodeError("input: expected an IMAGE [batch, height, width, channels] or a MASK [batch, height, "
                            "width]")
        kind, opt = dynamic_combo_choice(inputs, "resize_type")
        method, h, w = inputs.scale_method, x.shape[1], x.shape[2]
        what = f"resize_type.{next(iter(opt))}"
        if kind in ("scale dimensions", "scale width", "scale height"):
            width = opt.get("width", 0) if kind != "scale height" else 0
            height = opt.get("height", 0) if kind != "scale width" else 0
            if width == 0 and height == 0:
                return (x,)
            if width == 0:
                width = max(1, round(w * height / h))
            elif height == 0:
                height = max(1, round(h * width / w))
            return (resize_image_or_mask(x, width, height, method, opt.get("crop", "disabled"), what),)
        if kind == "scale by multiplier":
            m = opt["multiplier"]
            return (resize_image_or_mask(x, round(w * m), round(h * m), method, "disabled", what),)
        if kind in ("scale longer dimension", "scale shorter dimension"):
            size = opt["longer_size" if kind == "scale longer dimension" else "shorter_size"]
            width, height = _edge_sizes(w, h, size, kind == "scale longer dimension")
            return (resize_image_or_mask(x, width, height, method, "disabled", what),)
        if kind == "scale total pixels":
            multiple = opt["multiple"]
            scale = (int(opt["megapixels"] * 1024 * 1024) / (w * h)) ** 0.5
            width = max(1, round(w * scale / multiple)) * multiple
            height = max(1, round(h * scale / multiple)) * multiple
            return (resize_image_or_mask(x, width, height, method, "disabled", what),)
        if kind == "match size":
            match = opt["match"]
            if not isinstance(match, torch.Tensor) or match.ndim not in (3, 4):
                raise NodeError("resize_type.match: expected an IMAGE or a MASK")
            return (resize_image_or_mask(x, match.shape[2], match.shape[1], method, opt["crop"], what),)
        return (_cover_multiple(x, opt["multiple"], method, what),)


def _cover_multiple(x: torch.Tensor, multiple: int, method: str, what: str) -> torch.Tensor:
    """ComfyUI's "scale to multiple": scale (rounding up) so the image covers the largest multiple-of-``multiple``
    size inside it, then cut the middle of that size."""
    h, w = x.shape[1], x.shape[2]
    tw, th = w // multiple * multiple, h // multiple * multiple
    if multiple <= 1 or tw == 0 or th == 0 or (tw, th) == (w, h):
        return x
    sw, sh = tw / w, th / h
    if sw >= sh:
        width, height = tw, max(th, math.ceil(h * sw))
    else:
        width, height = max(tw, math.ceil(w * sh)), th
    out = resize_image_or_mask(x, width, height, method, "disabled", what)
    x0, y0 = (width - tw) // 2, (height - th) // 2
    return out[:, y0:y0 + th, x0:x0 + tw]


# --- images and masks ------------------------------------------------------------------------------------

def check_mask(mask: Any, what: str = "mask") -> torch.Tensor:
    """A MASK [batch, height, width] (a single [height, width] mask is taken as a batch of one)."""
    import torch

    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise NodeError(f"{what}: expected a MASK tensor [batch, height, width], got {shape}")
    return mask if mask.ndim == 3 else mask[None]


class EmptyImage(Node):
    """A batch of images of one colour (``color`` as 0xRRGGBB)."""

    CATEGORY = "image"
    DISPLAY_NAME = "Empty Image"

    class Inputs(NodeInputs):
        width: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        height: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        batch_size: int = Widget(1, ge=1, le=4096)
        color: int = Widget(0, ge=0, le=0xFFFFFF, step=1, display="color")

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        check_image_size(inputs.width, inputs.height, inputs.batch_size, "width / height / batch_size")
        c = inputs.color
        rgb = torch.tensor([((c >> 16) & 0xFF) / 0xFF, ((c >> 8) & 0xFF) / 0xFF, (c & 0xFF) / 0xFF])
        return (rgb.expand(inputs.batch_size, inputs.height, inputs.width, 3).contiguous(),)


def batch_images(images: list[torch.Tensor], names: list[str]) -> torch.Tensor:
    """ComfyUI's image batching: images with one channel fewer than the most get an opaque alpha channel, and
    each is resized (bilinear, centre crop) to the first one's size where it differs."""
    import torch
    import torch.nn.functional as F

    most = max(image.shape[-1] for image in images)
    _, h, w, _ = images[0].shape
    check_image_size(w, h, sum(image.shape[0] for image in images), names[-1])
    out = []
    for image, name in zip(images, names, strict=True):
        if image.shape[-1] < most:
            if image.shape[-1] != most - 1:
                raise NodeError(f"{name}: {image.shape[-1]} channels cannot join a batch of {most}")
            image = F.pad(image, (0, 1), value=1.0)
        if image.shape[1:3] != (h, w):
            image = resize(image.movedim(-1, 1), w, h, "bilinear", "center").movedim(1, -1)
        out.append(image)
    return torch.cat(out, dim=0)


def batch_masks(masks: list[torch.Tensor], names: list[str]) -> torch.Tensor:
    """ComfyUI's mask batching: each resized (bilinear, centre crop) to the first one's size where it differs."""
    import torch

    _, h, w = masks[0].shape
    check_image_size(w, h, sum(m.shape[0] for m in masks), names[-1])
    return torch.cat([m if m.shape[1:] == (h, w) else resize(m[:, None], w, h, "bilinear", "center")[:, 0]
                      for m in masks], dim=0)


class ImageBatch(Node):
    """image2 appended to image1's batch: resized (bilinear, centre crop) to image1's size where it differs,
    and given an opaque alpha channel where only image1 has one (or the other way round)."""

    CATEGORY = "image/batch"
    DISPLAY_NAME = "Batch Images (DEPRECATED)"
    DEPRECATED = True

    class Inputs(NodeInputs):
        image1: Any = Link(IMAGE)
        image2: Any = Link(IMAGE)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        images = [check_image(inputs.image1, "image1"), check_image(inputs.image2, "image2")]
        return (batch_images(images, ["image1", "image2"]),)


IMAGE_SLOTS = [f"image{i}" for i in range(50)]
MASK_SLOTS = [f"mask{i}" for i in range(50)]


class BatchImagesNode(Node):
    """Images from up to 50 inputs in one batch, each resized to the first one's size where it differs."""

    CATEGORY = "image/batch"
    DISPLAY_NAME = "Batch Images"

    Inputs = create_model("BatchImagesNodeInputs", __base__=NodeInputs,
                          **autogrow_fields("images", IMAGE, prefix="image", min=1, max=50, template="image",
                                            required=True))

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        given = [(f"images.{n}", getattr(inputs, f"images_{n}")) for n in IMAGE_SLOTS]
        given = [(name, check_image(v, name)) for name, v in given if v is not None]
        return (batch_images([v for _, v in given], [name for name, _ in given]),)


class BatchMasksNode(Node):
    """Masks from up to 50 inputs in one batch, each resized to the first one's size where it differs."""

    CATEGORY = "image/mask"
    DISPLAY_NAME = "Batch Masks"

    Inputs = create_model("BatchMasksNodeInputs", __base__=NodeInputs,
                          **autogrow_fields("masks", MASK, prefix="mask", min=1, max=50, template="mask",
                                            required=True))

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        given = [(f"masks.{n}", getattr(inputs, f"masks_{n}")) for n in MASK_SLOTS]
        given = [(name, check_mask(v, name)) for name, v in given if v is not None]
        return (batch_masks([v for _, v in given], [name for name, _ in given]),)


class RepeatImageBatch(Node):
    """The batch repeated ``amount`` times."""

    CATEGORY = "image/batch"
    DISPLAY_NAME = "Repeat Image Batch"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        amount: int = Widget(1, ge=1, le=4096)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        b, h, w, _ = image.shape
        check_image_size(w, h, b * inputs.amount, "amount")
        return (image.repeat(inputs.amount, 1, 1, 1),)


class ImageFromBatch(Node):
    """``length`` images from ``batch_index`` on (a negative index counts from the end; both are clamped to
    the batch)."""

    CATEGORY = "image/batch"
    DISPLAY_NAME = "Get Image from Batch"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        batch_index: int = Widget(0, ge=-MAX_SIZE, le=MAX_SIZE)
        length: int = Widget(1, ge=1, le=4096)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        n = image.shape[0]
        index = inputs.batch_index + n if inputs.batch_index < 0 else inputs.batch_index
        index = max(0, min(n - 1, index))
        return (image[index:index + min(n - index, inputs.length)].clone(),)


class ImageCrop(Node):
    """A width x height window from (x, y), cut at the image's edges (x and y kept inside the image)."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Crop Image (DEPRECATED)"
    DEPRECATED = True

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        width: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        height: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=1)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        x, y = min(inputs.x, image.shape[2] - 1), min(inputs.y, image.shape[1] - 1)
        return (image[:, y:y + inputs.height, x:x + inputs.width, :],)


ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


class ImageRotate(Node):
    """Rotate by a quarter turn, a half or three quarters (clockwise)."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Rotate Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        rotation: Literal[ROTATIONS] = Widget("none")  # type: ignore[valid-type]

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        return (torch.rot90(check_image(inputs.image), k=ROTATIONS.index(inputs.rotation), dims=[2, 1]),)


FLIPS = ("x-axis: vertically", "y-axis: horizontally")


class ImageFlip(Node):
    """Mirror top to bottom (x-axis) or left to right (y-axis)."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Flip Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        flip_method: Literal[FLIPS] = Widget("x-axis: vertically")  # type: ignore[valid-type]

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        return (torch.flip(check_image(inputs.image), dims=[1 if inputs.flip_method.startswith("x") else 2]),)


class ImageScaleToMaxDimension(Node):
    """Resize so the longer side is ``largest_size`` (the aspect kept, the other side rounded)."""

    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Scale Image to Max Dimension"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        upscale_method: str = Widget("area", choices=("area", "lanczos", "bilinear", "nearest-exact", "bilinear",
                                                      "bicubic"))
        largest_size: int = Widget(512, ge=0, le=MAX_SIZE, step=1)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        width, height = _edge_sizes(image.shape[2], image.shape[1], inputs.largest_size, longer=True)
        return (scale_image(image, width, height, inputs.upscale_method, "disabled", "largest_size"),)


class ResizeAndPadImage(Node):
    """Fit the image inside target_width x target_height (aspect kept, sizes truncated) and pad the rest with
    white or black, centred."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Resize And Pad Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        target_width: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        target_height: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        padding_color: Literal["white", "black"] = Widget("white", advanced=True)
        interpolation: Literal["area", "bicubic", "nearest-exact", "bilinear", "lanczos"] = Widget(
            "area", advanced=True)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        image = check_image(inputs.image)
        b, h, w, c = image.shape
        tw, th = inputs.target_width, inputs.target_height
        check_image_size(tw, th, b, "target_width / target_height")
        scale = min(tw / w, th / h)
        nw, nh = int(w * scale), int(h * scale)
        check_image_size(nw, nh, b, "target_width / target_height")
        resized = resize(image.movedim(-1, 1), nw, nh, inputs.interpolation, "disabled")
        out = torch.full((b, c, th, tw), 0.0 if inputs.padding_color == "black" else 1.0, dtype=image.dtype)
        y, x = (th - nh) // 2, (tw - nw) // 2
        out[:, :, y:y + nh, x:x + nw] = resized
        return (out.movedim(1, -1),)


SPACING_COLORS = {"white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0),
                  "blue": (0.0, 0.0, 1.0)}


def _pad_to(image: torch.Tensor, size: int, dim: int, value: float) -> torch.Tensor:
    """Pad height (dim 1) or width (dim 2) of [B, H, W, C] to ``size``, split evenly (the extra one after)."""
    import torch.nn.functional as F

    extra = size - image.shape[dim]
    if extra <= 0:
        return image
    before, after = extra // 2, extra - extra // 2
    pad = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return F.pad(image, pad, value=value)


class ImageStitch(Node):
    """image2 joined to image1 on one side (right, down, left, up), optionally resized to match and with a
    coloured gap between; without image2, image1 unchanged."""

    CATEGORY = "image/transform"
    DISPLAY_NAME = "Stitch Images"

    class Inputs(NodeInputs):
        image1: Any = Link(IMAGE)
        direction: Literal["right", "down", "left", "up"] = Widget("right")
        match_image_size: bool = Widget(True)
        spacing_width: int = Widget(0, ge=0, le=1024, step=2, advanced=True)
        spacing_color: Literal["white", "black", "red", "green", "blue"] = Widget("white", advanced=True)
        image2: Any = Link(IMAGE, optional=True)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        a = check_image(inputs.image1, "image1")
        if inputs.image2 is None:
            return (a,)
        b = check_image(inputs.image2, "image2")
        sideways = inputs.direction in ("left", "right")
        n = max(a.shape[0], b.shape[0])  # the shorter batch repeats its last image
        a = torch.cat([a, a[-1:].repeat(n - a.shape[0], 1, 1, 1)]) if a.shape[0] < n else a
        b = torch.cat([b, b[-1:].repeat(n - b.shape[0], 1, 1, 1)]) if b.shape[0] < n else b
        colour = SPACING_COLORS[inputs.spacing_color]
        if inputs.match_image_size:
            (h1, w1), (h2, w2) = a.shape[1:3], b.shape[1:3]
            th, tw = (h1, int(h1 * (w2 / h2))) if sideways else (int(w1 / (w2 / h2)), w1)
            b = scale_image(b, tw, th, "lanczos", "disabled", "image2")
        else:
            value = 0.0 if isinstance(colour, tuple) else colour
            dim = 1 if sideways else 2
            size = max(a.shape[dim], b.shape[dim])
            a, b = _pad_to(a, size, dim, value), _pad_to(b, size, dim, value)
        channels = max(a.shape[-1], b.shape[-1])  # a missing alpha is opaque
        a, b = (torch.cat([t, torch.ones(*t.shape[:-1], channels - t.shape[-1])], dim=-1) for t in (a, b))
        parts = [b, a] if inputs.direction in ("left", "up") else [a, b]
        gap = inputs.spacing_width + inputs.spacing_width % 2
        if gap > 0:
            shape = ((n, max(a.shape[1], b.shape[1]), gap, channels) if sideways
                     else (n, gap, max(a.shape[2], b.shape[2]), channels))
            spacing = torch.zeros(shape)
            if isinstance(colour, tuple):
                for i, v in enumerate(colour[:channels]):
                    spacing[..., i] = v
            else:
                spacing[..., :min(3, channels)] = colour
            if channels == 4:
                spacing[..., 3] = 1.0
            parts.insert(1, spacing)
        dim = 2 if sideways else 1
        total = sum(p.shape[dim] for p in parts)
        size = (total, parts[0].shape[1]) if sideways else (parts[0].shape[2], total)
        check_image_size(size[0], size[1], n, "image2")
        try:
            return (torch.cat(parts, dim=dim),)
        except RuntimeError:
            raise NodeError(f"image2: {list(b.shape[1:3])} cannot be joined to {list(a.shape[1:3])} "
                            f"going {inputs.direction} without match_image_size") from None


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def _blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    import torch

    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    if mode == "difference":
        return a - b
    return b


class ImageBlend(Node):
    """image1 mixed with image2 blended onto it (normal, multiply, screen, overlay, soft light, difference) by
    blend_factor; image2 resized (bicubic, centre crop) to image1's size where it differs."""

    CATEGORY = "image/postprocessing"
    DISPLAY_NAME = "Blend Images"

    class Inputs(NodeInputs):
        image1: Any = Link(IMAGE)
        image2: Any = Link(IMAGE)
        blend_factor: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)
        blend_mode: Literal[BLEND_MODES] = Widget("normal")  # type: ignore[valid-type]

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch.nn.functional as F

        a, b = check_image(inputs.image1, "image1"), check_image(inputs.image2, "image2")
        if a.shape[-1] < b.shape[-1]:
            b = b[..., :a.shape[-1]]
        elif a.shape[-1] > b.shape[-1]:  # an opaque alpha for the image without one
            b = F.pad(b, (0, a.shape[-1] - b.shape[-1]), value=1.0)
        if a.shape != b.shape:
            b = resize(b.movedim(-1, 1), a.shape[2], a.shape[1], "bicubic", "center").movedim(1, -1)
            if b.shape[0] != a.shape[0] and b.shape[0] != 1:
                raise NodeError(f"image2: a batch of {b.shape[0]} cannot blend with a batch of {a.shape[0]}")
        f = inputs.blend_factor
        return ((a * (1 - f) + _blend(a, b, inputs.blend_mode) * f).clamp(0, 1),)


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    """ComfyUI's kernel: a Gaussian over a -1..1 grid of ``size`` points (not pixel units), summing to 1."""
    import torch

    x, y = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(image: torch.Tensor, kernel: torch.Tensor, radius: int, what: str) -> torch.Tensor:
    """Convolve each channel with ``kernel`` over a reflect-padded copy, as ComfyUI's blur and sharpen do."""
    import torch.nn.functional as F

    b, h, w, c = image.shape
    if radius >= h or radius >= w:
        raise NodeError(f"{what}: {radius} is too large for a {w}x{h} image (the edge is mirrored)")
    x = F.pad(image.movedim(-1, 1), (radius,) * 4, "reflect")
    k = kernel.repeat(c, 1, 1).unsqueeze(1)
    out = F.conv2d(x, k, padding=kernel.shape[-1] // 2, groups=c)[:, :, radius:-radius, radius:-radius]
    return out.movedim(1, -1)


class ImageBlur(Node):
    """A Gaussian blur of radius blur_radius."""

    CATEGORY = "image/postprocessing"
    DISPLAY_NAME = "Blur Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        blur_radius: int = Widget(1, ge=1, le=31, step=1)
        sigma: float = Widget(1.0, ge=0.1, le=10.0, step=0.1)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        r = inputs.blur_radius
        return (_filter(check_image(inputs.image), _gaussian(2 * r + 1, inputs.sigma), r, "blur_radius"),)


class ImageSharpen(Node):
    """Sharpen by subtracting a Gaussian blur (strength alpha), clamped to 0..1."""

    CATEGORY = "image/postprocessing"
    DISPLAY_NAME = "Sharpen Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        sharpen_radius: int = Widget(1, ge=1, le=31, step=1, advanced=True)
        sigma: float = Widget(1.0, ge=0.1, le=10.0, step=0.01, advanced=True)
        alpha: float = Widget(1.0, ge=0.0, le=5.0, step=0.01, advanced=True)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        r = inputs.sharpen_radius
        kernel = _gaussian(2 * r + 1, inputs.sigma) * -(inputs.alpha * 10)
        kernel[r, r] = kernel[r, r] - kernel.sum() + 1.0
        return (_filter(check_image(inputs.image), kernel, r, "sharpen_radius").clamp(0, 1),)


class ImageAddNoise(Node):
    """Gaussian noise of ``strength`` added (from ``seed``, torch's CPU generator as ComfyUI), clamped to 0..1."""

    CATEGORY = "image"
    DISPLAY_NAME = "Add Noise to Image"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        seed: int = Widget(0, ge=0, le=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                           tooltip="The random seed used for creating the noise.")
        strength: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        image = check_image(inputs.image)
        g = torch.Generator().manual_seed(inputs.seed)  # the same stream as torch.manual_seed(seed) on the CPU
        noise = torch.randn(image.size(), generator=g).to(image)
        return (torch.clip(image + inputs.strength * noise, 0.0, 1.0),)


class ImageInvert(Node):
    """1 - each colour value (an alpha channel is kept: it is transparency, not colour)."""

    CATEGORY = "image/color"
    DISPLAY_NAME = "Invert Image Colors"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        out = 1.0 - image
        if image.shape[-1] == 4:
            out[..., 3] = image[..., 3]
        return (out,)


CHANNELS = ("red", "green", "blue", "alpha")


class ImageToMask(Node):
    """One channel of an image as a MASK."""

    CATEGORY = "mask"
    DISPLAY_NAME = "Convert Image to Mask"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        channel: Literal[CHANNELS] = Widget("red")  # type: ignore[valid-type]

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        image = check_image(inputs.image)
        index = CHANNELS.index(inputs.channel)
        if index >= image.shape[-1]:
            raise NodeError(f"channel: the image has {image.shape[-1]} channels, so no {inputs.channel!r} channel")
        return (image[..., index],)


class MaskToImage(Node):
    """A MASK as a grey RGB image."""

    CATEGORY = "mask"
    DISPLAY_NAME = "Convert Mask to Image"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        mask = check_mask(inputs.mask)
        return (mask[..., None].expand(-1, -1, -1, 3),)


class InvertMask(Node):
    """1 - mask."""

    CATEGORY = "mask"
    DISPLAY_NAME = "InvertMask"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (1.0 - check_mask(inputs.mask),)


class ImageColorToMask(Node):
    """1 where a pixel's 8-bit colour is exactly ``color`` (0xRRGGBB), else 0."""

    CATEGORY = "mask"
    DISPLAY_NAME = "ImageColorToMask"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        color: int = Widget(0, ge=0, le=0xFFFFFF, step=1, display="color")

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        image = check_image(inputs.image)
        if image.shape[-1] < 3:
            raise NodeError(f"image: ImageColorToMask needs RGB, got {image.shape[-1]} channel(s)")
        v = (image.clamp(0, 1) * 255.0).round().to(torch.int)
        packed = (v[..., 0] << 16) + (v[..., 1] << 8) + v[..., 2]
        return ((packed == inputs.color).float(),)


class SolidMask(Node):
    """A width x height mask of one value."""

    CATEGORY = "mask"
    DISPLAY_NAME = "SolidMask"

    class Inputs(NodeInputs):
        value: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
        width: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        height: int = Widget(512, ge=1, le=MAX_SIZE, step=1)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        check_image_size(inputs.width, inputs.height, 1, "width / height")
        return (torch.full((1, inputs.height, inputs.width), inputs.value, dtype=torch.float32),)


class CropMask(Node):
    """A width x height window of the mask from (x, y), cut at its edges."""

    CATEGORY = "mask"
    DISPLAY_NAME = "CropMask"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        width: int = Widget(512, ge=1, le=MAX_SIZE, step=1)
        height: int = Widget(512, ge=1, le=MAX_SIZE, step=1)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        m = check_mask(inputs.mask)
        return (m[:, inputs.y:inputs.y + inputs.height, inputs.x:inputs.x + inputs.width],)


MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


class MaskComposite(Node):
    """Combine ``source`` into ``destination`` at (x, y) by an operation (and/or/xor on the rounded masks);
    the result is clamped to 0..1."""

    CATEGORY = "mask"
    DISPLAY_NAME = "MaskComposite"

    class Inputs(NodeInputs):
        destination: Any = Link(MASK)
        source: Any = Link(MASK)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        operation: Literal[MASK_OPERATIONS] = Widget("multiply")  # type: ignore[valid-type]

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        out = check_mask(inputs.destination, "destination").clone()
        src = check_mask(inputs.source, "source")
        x, y = inputs.x, inputs.y
        w, h = min(x + src.shape[-1], out.shape[-1]) - x, min(y + src.shape[-2], out.shape[-2]) - y
        if w > 0 and h > 0:
            d, s_ = out[:, y:y + h, x:x + w], src[:, :h, :w]
            op = inputs.operation
            if op in ("and", "or", "xor"):
                fn = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}[op]
                value = fn(d.round().bool(), s_.round().bool()).float()
            else:
                value = d * s_ if op == "multiply" else d + s_ if op == "add" else d - s_
            out[:, y:y + h, x:x + w] = value
        return (out.clamp(0.0, 1.0),)


class FeatherMask(Node):
    """Fade the mask towards its edges over ``left``/``top``/``right``/``bottom`` pixels (ComfyUI's ramps,
    which for right and bottom start at the first column or row and then run from the far edge inwards)."""

    CATEGORY = "mask"
    DISPLAY_NAME = "FeatherMask"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)
        left: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        top: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        right: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        bottom: int = Widget(0, ge=0, le=MAX_SIZE, step=1)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        out = check_mask(inputs.mask).clone()
        h, w = out.shape[-2:]
        left, right, top, bottom = min(inputs.left, w), min(inputs.right, w), min(inputs.top, h), min(inputs.bottom, h)
        for i in range(left):
            out[:, :, i] *= (i + 1) / left
        for i in range(right):  # index -0 is column 0, as ComfyUI has it
            out[:, :, -i] *= (i + 1) / right
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return (out,)


class GrowMask(Node):
    """Grow (expand > 0) or shrink (< 0) the mask by that many pixels: grey dilation or erosion with a 3x3
    cross (tapered corners) or square, repeated."""

    CATEGORY = "mask"
    DISPLAY_NAME = "GrowMask"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)
        expand: int = Widget(0, ge=-MAX_SIZE, le=MAX_SIZE, step=1)
        tapered_corners: bool = Widget(True)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import numpy as np
        import scipy.ndimage
        import torch

        m = check_mask(inputs.mask)
        c = 0 if inputs.tapered_corners else 1
        footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
        step = scipy.ndimage.grey_erosion if inputs.expand < 0 else scipy.ndimage.grey_dilation
        # after height + width steps nothing moves any more: more would cost time and change nothing
        times = min(abs(inputs.expand), m.shape[-2] + m.shape[-1])
        out = []
        for item in m:
            a = item.detach().cpu().numpy()
            for _ in range(times):
                ctx.check_interrupted()
                a = step(a, footprint=footprint)
            out.append(torch.from_numpy(a))
        return (torch.stack(out),)


class ThresholdMask(Node):
    """1 where the mask is above ``value``, else 0."""

    CATEGORY = "mask"
    DISPLAY_NAME = "ThresholdMask"

    class Inputs(NodeInputs):
        mask: Any = Link(MASK)
        value: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(MASK, "MASK"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return ((check_mask(inputs.mask) > inputs.value).float(),)


class SplitImageWithAlpha(Node):
    """The RGB channels, and 1 - alpha as a MASK (zeros without alpha)."""

    CATEGORY = "mask/compositing"
    DISPLAY_NAME = "Split Image with Alpha"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)

    OUTPUTS = (Output(IMAGE, "IMAGE"), Output(MASK, "MASK"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        image = check_image(inputs.image)
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


class JoinImageWithAlpha(Node):
    """RGB plus 1 - alpha (the mask resized bilinear to the image) as a fourth channel."""

    CATEGORY = "mask/compositing"
    DISPLAY_NAME = "Join Image with Alpha"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        alpha: Any = Link(MASK)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch
        import torch.nn.functional as F

        image, alpha = check_image(inputs.image), check_mask(inputs.alpha, "alpha")
        n = min(image.shape[0], alpha.shape[0])
        alpha = 1.0 - F.interpolate(alpha[:, None], size=image.shape[1:3], mode="bilinear")[:, 0]
        return (torch.cat((image[:n, ..., :3], alpha[:n, ..., None]), dim=-1),)


def _to_batch(t: torch.Tensor, n: int) -> torch.Tensor:
    """Cut or cycle a batch to ``n`` items."""
    if t.shape[0] >= n:
        return t[:n]
    return t.repeat((-(-n // t.shape[0]),) + (1,) * (t.ndim - 1))[:n]


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None,
              resize_source: bool, multiplier: int = 1) -> torch.Tensor:
    """Paste ``source`` ([B, C, h, w]) onto a copy of ``destination`` with its top-left corner at (x, y),
    blended by ``mask`` (resized to the source, bilinear); what falls outside the destination is cut off. x and
    y count in units of 1 / ``multiplier`` of a pixel of the tensors (8 for latents placed in image pixels)."""
    import torch
    import torch.nn.functional as F

    out = destination.clone()
    if resize_source:
        source = F.interpolate(source, size=out.shape[-2:], mode="bilinear")
    source = _to_batch(source, out.shape[0])
    x, y = min(x, out.shape[-1] * multiplier) // multiplier, min(y, out.shape[-2] * multiplier) // multiplier
    h, w = min(source.shape[-2], out.shape[-2] - y), min(source.shape[-1], out.shape[-1] - x)
    if mask is None:
        m = torch.ones_like(source[:, :1])
    else:
        m = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).to(source), size=source.shape[-2:], mode="bilinear")
        m = _to_batch(m, source.shape[0])
    m = m[..., :h, :w]
    region = out[..., y:y + h, x:x + w]
    out[..., y:y + h, x:x + w] = m * source[..., :h, :w] + (1 - m) * region
    return out


class ImageCompositeMasked(Node):
    """Paste ``source`` onto ``destination`` at (x, y), through an optional mask."""

    CATEGORY = "image"
    DISPLAY_NAME = "ImageCompositeMasked"

    class Inputs(NodeInputs):
        destination: Any = Link(IMAGE)
        source: Any = Link(IMAGE)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=1)
        resize_source: bool = Widget(False)
        mask: Any = Link(MASK, optional=True)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch.nn.functional as F

        dest, src = check_image(inputs.destination, "destination"), check_image(inputs.source, "source")
        mask = None if inputs.mask is None else check_mask(inputs.mask)
        if dest.shape[-1] < src.shape[-1]:
            src = src[..., :dest.shape[-1]]
        elif dest.shape[-1] > src.shape[-1]:  # an opaque alpha for a source without one
            src = F.pad(src, (0, dest.shape[-1] - src.shape[-1]), value=1.0)
        out = composite(dest.movedim(-1, 1), src.movedim(-1, 1), inputs.x, inputs.y, mask, inputs.resize_source)
        return (out.movedim(1, -1),)


class Canny(Node):
    """Canny edges (white on black) with kornia's detector, as ComfyUI runs it: thresholds on the gradient
    magnitude of the blurred grey image."""

    CATEGORY = "image/preprocessors"
    DISPLAY_NAME = "Canny"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)
        low_threshold: float = Widget(0.4, ge=0.01, le=0.99, step=0.01)
        high_threshold: float = Widget(0.8, ge=0.01, le=0.99, step=0.01)

    OUTPUTS = (Output(IMAGE, "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from kornia.filters import canny

        image = check_image(inputs.image)
        if image.shape[-1] not in (1, 3):
            raise NodeError(f"image: Canny takes grey or RGB images, got {image.shape[-1]} channels")
        if inputs.low_threshold > inputs.high_threshold:
            raise NodeError(f"low_threshold: {inputs.low_threshold} is above high_threshold "
                            f"({inputs.high_threshold})")
        edges = canny(image.movedim(-1, 1), inputs.low_threshold, inputs.high_threshold)[1]
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


NODES = [ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ResizeImageMaskNode, LatentUpscale, LatentUpscaleBy, EmptyImage, ImageBatch,
         BatchImagesNode, BatchMasksNode,
         RepeatImageBatch, ImageFromBatch, ImageCrop, ImageRotate, ImageFlip, ImageScaleToMaxDimension, ResizeAndPadImage,
         ImageStitch, ImageBlend, ImageBlur, ImageSharpen, ImageAddNoise, ImageInvert, ImageToMask, MaskToImage, InvertMask, ImageColorToMask, SolidMask, CropMask,
         MaskComposite, FeatherMask, GrowMask, ThresholdMask, SplitImageWithAlpha, JoinImageWithAlpha, ImageCompositeMasked,
         Canny]
