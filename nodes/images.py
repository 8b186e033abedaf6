"""Image nodes: LoadImage, SaveImage, PreviewImage, ImageCompare, SaveAnimatedWEBP, SaveImageWebsocket.

IMAGE is float32 ``[B, H, W, C]`` in 0..1 on the CPU and MASK float32 ``[B, H, W]`` (ComfyUI's conventions).
Every file name from a workflow is confined to its folder with :func:`graph_runtime.resolve_inside`.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import (
    Hidden,
    Link,
    Node,
    NodeError,
    NodeInputs,
    NodeResult,
    Output,
    RuntimePaths,
    UnsafePathError,
    Widget,
    active_paths,
    resolve_inside,
)
from graph_runtime.limits import LIMITS
from graph_runtime.node import EditorWidget

if TYPE_CHECKING:  # numpy, torch and PIL load when an image is read or written, not when nodes are declared
    import torch
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_input_folder: Path | None = None


def set_input_folder(path: str | os.PathLike | None) -> None:
    """Where LoadImage's list of choices comes from (the server sets its input folder here)."""
    global _input_folder
    _input_folder = Path(path).resolve() if path is not None else None


def input_folder() -> Path:
    """The folder listed by LoadImage: :func:`set_input_folder`, else the running runtime's input folder
    (``graph_runtime.active_paths``: the server's ``--input-dir``, an executor's paths), else
    ``GRAPH_RUNTIME_INPUT``, else ./input."""
    if _input_folder is not None:
        return _input_folder
    active = active_paths()
    if active is not None:
        return active.input
    return Path(os.environ.get("GRAPH_RUNTIME_INPUT") or "input").resolve()


def list_input_images() -> list[str]:
    folder = input_folder()
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# ComfyUI's annotated file names: "x.png [output]" is x.png in the output folder (the editor names previews
# and saved images this way when they are loaded again); no annotation, or "[input]", is the input folder.
_ANNOTATIONS = (("[input]", "input"), ("[output]", "output"), ("[temp]", "temp"))


def split_annotated_name(name: str) -> tuple[str, str]:
    """``"x.png [output]"`` -> ("output", "x.png"); a name without an annotation is in the input folder."""
    for suffix, kind in _ANNOTATIONS:
        if name.endswith(suffix):
            bare = name[: -len(suffix)]
            return kind, bare[:-1] if bare.endswith(" ") else bare
    return "input", name


def _annotated_file(paths: RuntimePaths, name: str) -> Path:
    """The file an (annotated) name means, confined to its folder (UnsafePathError otherwise)."""
    kind, bare = split_annotated_name(name)
    return resolve_inside(paths.folder(kind), bare)


def is_annotated_image(name: str) -> bool:
    """Whether ``name`` is an annotated name of an image file that exists (LoadImage's choices list only the
    input folder's plain names)."""
    if split_annotated_name(name)[1] == name:
        return False
    try:
        path = _annotated_file(active_paths() or RuntimePaths(input=input_folder()), name)
    except ValueError:  # UnsafePathError: outside its folder
        return False
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _resolve(base: Path, name: str, what: str) -> Path:
    try:
        return resolve_inside(base, name)
    except UnsafePathError as exc:
        raise NodeError(f"{what}: {exc}") from exc


def check_image_cost(img: Image.Image, name: str, what: str = "image") -> int:
    """Refuse, from the header alone, an image whose decoded frames would pass the limits (graph_runtime.limits);
    returns the number of frames to read."""
    width, height = img.size
    pixels = width * height
    if pixels > LIMITS.max_image_pixels:
        raise NodeError(f"{what}: {name} is {width}x{height} ({pixels:,} pixels); at most "
                        f"{LIMITS.max_image_pixels:,} are decoded (max_image_pixels)")
    frames = getattr(img, "n_frames", 1) or 1
    if frames > LIMITS.max_image_frames:
        raise NodeError(f"{what}: {name} has {frames} frames; at most {LIMITS.max_image_frames} are read "
                        f"(max_image_frames)")
    if pixels * frames > LIMITS.max_image_total_pixels:
        raise NodeError(f"{what}: {name} has {frames} frames of {width}x{height} ({pixels * frames:,} pixels in "
                        f"all); at most {LIMITS.max_image_total_pixels:,} are decoded (max_image_total_pixels)")
    return frames


def load_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [F, H, W, 3] and MASK [F, H, W] (1 - alpha; zeros without alpha) for every frame of the size of
    the first one. Sizes and frame counts are checked against the limits before anything is decoded."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    # Pillow's own bomb guard follows the limit (it warns above it and refuses at twice it, even on open)
    Image.MAX_IMAGE_PIXELS = LIMITS.max_image_pixels
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise NodeError(f"image: {path.name} is too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise NodeError(f"image: cannot read {path.name}: {exc}") from exc
    frames, masks, size = [], [], None
    with img:
        try:
            count = check_image_cost(img, path.name)
        except (OSError, ValueError, EOFError) as exc:  # n_frames reads the file: a truncated one fails here
            raise NodeError(f"image: cannot read {path.name}: {exc}") from None
        for index, frame in enumerate(ImageSequence.Iterator(img)):
            if index >= count:
                break
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue
            rgb = np.array(frame.convert("RGB"), dtype=np.float32) / 255.0
            frames.append(torch.from_numpy(rgb))
            if "A" in frame.getbands():
                alpha = np.array(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            else:
                masks.append(torch.zeros(size[1], size[0], dtype=torch.float32))
    return torch.stack(frames), torch.stack(masks)


class LoadImage(Node):
    """Load an image from the input folder; its alpha channel becomes the MASK (1 - alpha, as ComfyUI)."""

    CATEGORY = "image"
    DISPLAY_NAME = "Load Image"

    class Inputs(NodeInputs):
        image: str = Widget(choices=list_input_images, accept=is_annotated_image, image_upload=True)

    OUTPUTS = (Output("IMAGE", "IMAGE"), Output("MASK", "MASK"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        kind, bare = split_annotated_name(inputs.image)
        path = _resolve(ctx.paths.folder(kind), bare, "image")
        if not path.is_file():
            raise NodeError(f"image: {bare!r} not found in the {kind} folder")
        return load_image_file(path)

    @classmethod
    def fingerprint(cls, literals: dict, ctx: Any) -> Any:
        try:
            st = _annotated_file(ctx.paths, str(literals.get("image", ""))).stat()
        except (OSError, ValueError):
            return None
        return f"{st.st_mtime_ns}:{st.st_size}"


def _to_pil(image: torch.Tensor) -> Image.Image:
    """One [H, W, C] image in 0..1 -> 8-bit PIL image (rounded, as diffusers' numpy_to_pil)."""
    import numpy as np
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr)


def _next_counter(folder: Path, filename: str) -> int:
    """One more than the highest ``{filename}_{NNNNN}_.*`` in ``folder`` (any extension, as ComfyUI counts)."""
    pattern = re.compile(re.escape(filename) + r"_(\d+)_\.[A-Za-z0-9]+$")
    highest = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if m := pattern.match(p.name):
                highest = max(highest, int(m[1]))
    return highest + 1


def _check_images(images: Any) -> None:
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise NodeError("images: expected an IMAGE tensor [batch, height, width, channels]")


def save_target(base: Path, prefix: str) -> tuple[Path, str, str, int]:
    """Where files with ``prefix`` go under ``base`` (the prefix may name a sub-folder): the folder (made),
    the file name stem, the sub-folder as the UI names it, and the next free counter."""
    if not prefix or not prefix.strip() or prefix.endswith(("/", "\\")):
        raise NodeError(f"filename_prefix: {prefix!r} is not a usable file name prefix")
    target = _resolve(base, prefix, "filename_prefix")
    folder, filename = target.parent, target.name
    folder.mkdir(parents=True, exist_ok=True)
    subfolder = folder.relative_to(base.resolve()).as_posix()
    return folder, filename, "" if subfolder == "." else subfolder, _next_counter(folder, filename)


def save_images(images: Any, base: Path, prefix: str, *, kind: str, prompt: Any = None,
                extra_pnginfo: Any = None, compress_level: int = 4) -> list[dict]:
    """Write a batch as ``{prefix}_{counter:05}_.png`` under ``base`` (prefix may name a sub-folder)."""
    from PIL.PngImagePlugin import PngInfo

    _check_images(images)
    folder, filename, subfolder, counter = save_target(base, prefix)
    meta = PngInfo()
    if prompt is not None:
        meta.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            meta.add_text(str(key), json.dumps(value))
    results = []
    for image in images:
        name = f"{filename}_{counter:05}_.png"
        _to_pil(image).save(folder / name, pnginfo=meta, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


class SaveImage(Node):
    """Save images as PNG files in the output folder, with the workflow embedded in the PNG metadata."""

    CATEGORY = "image"
    DISPLAY_NAME = "Save Image"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        images: Any = Link("IMAGE")
        filename_prefix: str = Widget("graph-runtime", tooltip="file name prefix; may start with a sub-folder")
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = ()

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        saved = save_images(inputs.images, ctx.paths.output, inputs.filename_prefix, kind="output",
                            prompt=inputs.prompt, extra_pnginfo=inputs.extra_pnginfo, compress_level=4)
        return NodeResult(outputs=(), ui={"images": saved})


class PreviewImage(Node):
    """Show images without keeping them: PNG files in the temp folder (fast, light compression)."""

    CATEGORY = "image"
    DISPLAY_NAME = "Preview Image"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        images: Any = Link("IMAGE")
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = ()

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        return NodeResult(outputs=(), ui={"images": preview_images(inputs.images, ctx, inputs.prompt,
                                                                   inputs.extra_pnginfo)})


def preview_images(images: Any, ctx: Any, prompt: Any = None, extra_pnginfo: Any = None,
                   stem: str = "graph-runtime") -> list[dict]:
    """PNG files in the temp folder for the editor to show (light compression, a random suffix per run)."""
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return save_images(images, ctx.paths.temp, f"{stem}_temp_{suffix}", kind="temp", prompt=prompt,
                       extra_pnginfo=extra_pnginfo, compress_level=1)


class MaskPreview(Node):
    """Show a mask as a grey image, without keeping it (temp folder)."""

    CATEGORY = "mask"
    DISPLAY_NAME = "MaskPreview"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        mask: Any = Link("MASK")
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = ()

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        import torch

        m = inputs.mask
        if not isinstance(m, torch.Tensor) or m.ndim not in (2, 3):
            raise NodeError("mask: expected a MASK tensor [batch, height, width]")
        grey = m.reshape(-1, 1, *m.shape[-2:]).movedim(1, -1).expand(-1, -1, -1, 3)
        return NodeResult(outputs=(), ui={"images": preview_images(grey, ctx, inputs.prompt, inputs.extra_pnginfo)})


class ImageCompare(Node):
    """Compares two images side by side with a slider (in the editor); either may be left out."""

    CATEGORY = "image"
    DISPLAY_NAME = "Image Compare"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        image_a: Any = Link("IMAGE", optional=True)
        image_b: Any = Link("IMAGE", optional=True)
        compare_view: Any = EditorWidget("IMAGECOMPARE")
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = ()

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        ui: dict[str, list] = {"a_images": [], "b_images": []}
        for side, images in (("a", inputs.image_a), ("b", inputs.image_b)):
            if images is not None and len(images) > 0:
                ui[f"{side}_images"] = preview_images(images, ctx, inputs.prompt, inputs.extra_pnginfo,
                                                      stem=f"graph-runtime.compare.{side}")
        return NodeResult(outputs=(), ui=ui)


WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


class SaveAnimatedWEBP(Node):
    """Save a batch of images as one animated WEBP in the output folder (the workflow in its EXIF, as
    ComfyUI writes it: ``prompt:{json}`` in ImageDescription, each extra item in the tags below Make)."""

    CATEGORY = "image"
    DISPLAY_NAME = "Save Animated WEBP"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        images: Any = Link("IMAGE")
        filename_prefix: str = Widget("graph-runtime", tooltip="file name prefix; may start with a sub-folder")
        fps: float = Widget(6.0, ge=0.01, le=1000.0, step=0.01)
        lossless: bool = Widget(True)
        quality: int = Widget(80, ge=0, le=100)
        method: Literal[tuple(WEBP_METHODS)] = Widget("default")  # type: ignore[valid-type]
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = (Output("IMAGE", "images"),)  # the images pass on (current ComfyUI)

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        _check_images(inputs.images)
        folder, filename, subfolder, counter = save_target(ctx.paths.output, inputs.filename_prefix)
        frames = [_to_pil(image) for image in inputs.images]
        exif = frames[0].getexif()
        if inputs.prompt is not None:
            exif[0x0110] = f"prompt:{json.dumps(inputs.prompt)}"
        if isinstance(inputs.extra_pnginfo, dict):
            items = list(inputs.extra_pnginfo.items())[:0x010F]
            for tag, (key, value) in zip(range(0x010F, 0x010F - len(items), -1), items, strict=True):
                exif[tag] = f"{key}:{json.dumps(value)}"
        name = f"{filename}_{counter:05}_.webp"
        frames[0].save(folder / name, save_all=True, append_images=frames[1:], duration=int(1000.0 / inputs.fps),
                       exif=exif, lossless=inputs.lossless, quality=inputs.quality,
                       method=WEBP_METHODS[inputs.method])
        return NodeResult(outputs=(inputs.images,),
                          ui={"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                              "animated": [True]})


class SaveAnimatedPNG(Node):
    """Save a batch of images as one animated PNG in the output folder (the workflow in "comf" chunks after the
    image data, as ComfyUI writes it)."""

    CATEGORY = "image"
    DISPLAY_NAME = "Save Animated PNG"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        images: Any = Link("IMAGE")
        filename_prefix: str = Widget("graph-runtime", tooltip="file name prefix; may start with a sub-folder")
        fps: float = Widget(6.0, ge=0.01, le=1000.0, step=0.01)
        compress_level: int = Widget(4, ge=0, le=9, advanced=True)
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = (Output("IMAGE", "images"),)

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        from PIL.PngImagePlugin import PngInfo

        _check_images(inputs.images)
        folder, filename, subfolder, counter = save_target(ctx.paths.output, inputs.filename_prefix)
        frames = [_to_pil(image) for image in inputs.images]
        meta = PngInfo()
        items = [("prompt", inputs.prompt)] if inputs.prompt is not None else []
        if isinstance(inputs.extra_pnginfo, dict):
            items += list(inputs.extra_pnginfo.items())
        for key, value in items:  # json.dumps writes ASCII, so latin-1 always holds it
            meta.add(b"comf", str(key).encode("latin-1", "replace") + b"\0" + json.dumps(value).encode("latin-1"),
                     after_idat=True)
        name = f"{filename}_{counter:05}_.png"
        frames[0].save(folder / name, pnginfo=meta, compress_level=inputs.compress_level, save_all=True,
                       duration=int(1000.0 / inputs.fps), append_images=frames[1:])
        return NodeResult(outputs=(inputs.images,),
                          ui={"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                              "animated": [True]})


class SaveImageWebsocket(Node):
    """Send each image as a PNG over the websocket, in the binary frame previews use (nothing is written to
    disk and no metadata is embedded); unlike a preview, a slow client still gets every one. For API clients
    that collect images from the socket."""

    CATEGORY = "api/image"
    DISPLAY_NAME = "SaveImageWebsocket"
    OUTPUT_NODE = True
    NOT_CACHED = True  # the images are sent by running, so every run runs it

    class Inputs(NodeInputs):
        images: Any = Link("IMAGE")

    OUTPUTS = ()

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        import io

        _check_images(inputs.images)
        total = inputs.images.shape[0]
        for step, image in enumerate(inputs.images):
            buf = io.BytesIO()
            _to_pil(image).save(buf, format="PNG", compress_level=1)
            ctx.preview(buf.getvalue(), "PNG", keep=True)  # a result: never skipped for a slow client
            ctx.progress(step + 1, total)
        return NodeResult(outputs=())
