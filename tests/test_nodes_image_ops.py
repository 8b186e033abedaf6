"""ComfyUI's resize nodes (ImageScale, ImageScaleBy, ImageScaleToTotalPixels, LatentUpscale, LatentUpscaleBy)
and image/mask operations, checked against ComfyUI's arithmetic: output sizes and rounding, centre-crop offsets,
values against torch's interpolate called as ComfyUI calls it, lanczos against Pillow, bislerp on cases worked
by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nodes_support import context, make_executor, make_registry
from PIL import Image

from graph_runtime import NodeError
from graph_runtime.limits import LIMITS
from graph_runtime.validation import WorkflowValidationError
from nodes import image_ops as ops

REG = make_registry()


def call(cls, tmp_path, **inputs):
    return cls().execute(cls.Inputs(**inputs), context(tmp_path))


def info(name):
    return REG.get(name).describe()


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 30, 50, 3, generator=g)


# --- declarations ----------------------------------------------------------------------------------------

def test_resize_declarations_are_comfyuis():
    d = info("ImageScale")
    assert d["input_order"]["required"] == ["image", "upscale_method", "width", "height", "crop"]
    assert d["input"]["required"]["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert d["input"]["required"]["width"][1] == {"default": 512, "min": 0, "max": 16384, "step": 1}
    assert d["input"]["required"]["crop"][0] == ["disabled", "center"]
    assert info("ImageScaleBy")["input"]["required"]["scale_by"][1] == {"default": 1.0, "min": 0.01, "max": 8.0,
                                                                         "step": 0.01}
    t = info("ImageScaleToTotalPixels")
    assert t["input_order"]["required"] == ["image", "upscale_method", "megapixels", "resolution_steps"]
    assert t["input"]["required"]["resolution_steps"][1] == {"default": 1, "min": 1, "max": 256, "advanced": True}
    lu = info("LatentUpscale")
    assert lu["input"]["required"]["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert lu["input"]["required"]["width"][1] == {"default": 512, "min": 0, "max": 16384, "step": 8}
    assert info("LatentUpscaleBy")["input"]["required"]["scale_by"][1]["default"] == 1.5
    assert {n: info(n)["display_name"] for n in ("ImageScale", "ImageScaleBy", "LatentUpscale", "LatentUpscaleBy")} \
        == {"ImageScale": "Upscale Image", "ImageScaleBy": "Upscale Image By", "LatentUpscale": "Upscale Latent",
            "LatentUpscaleBy": "Upscale Latent By"}


# --- ImageScale ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic"])
def test_image_scale_values_are_torch_interpolate(tmp_path, image, method):
    (out,) = call(ops.ImageScale, tmp_path, image=image, upscale_method=method, width=37, height=71,
                  crop="disabled")
    expected = F.interpolate(image.movedim(-1, 1), size=(71, 37), mode=method).movedim(1, -1)
    assert out.shape == (2, 71, 37, 3) and torch.equal(out, expected)


def test_image_scale_center_crop_offsets(tmp_path, image):
    """50x30 -> 20x20: the source aspect (5:3) is wider, so round((50 - 50 * (1 / (5/3))) / 2) = 10 columns
    go from each side."""
    assert ops.center_crop_box(50, 30, 20, 20) == (10, 0)
    assert ops.center_crop_box(30, 50, 20, 20) == (0, 10)
    assert ops.center_crop_box(50, 30, 100, 60) == (0, 0)
    assert ops.center_crop_box(101, 100, 100, 100) == (0, 0)  # round(0.5) == 0, Python's rounding
    assert ops.center_crop_box(103, 100, 100, 100) == (2, 0)  # round(1.5) == 2
    (out,) = call(ops.ImageScale, tmp_path, image=image, upscale_method="bilinear", width=20, height=20, crop="center")
    expected = F.interpolate(image[:, :, 10:40].movedim(-1, 1), size=(20, 20), mode="bilinear").movedim(1, -1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("width,height,expected", [
    (0, 0, (30, 50)), (0, 45, (45, 75)), (25, 0, (15, 25)), (0, 1, (1, 2)), (1, 0, (1, 1)), (99, 0, (59, 99)),
])
def test_image_scale_zero_keeps_aspect_with_comfyuis_rounding(tmp_path, image, width, height, expected):
    (out,) = call(ops.ImageScale, tmp_path, image=image, upscale_method="nearest-exact", width=width, height=height,
                  crop="disabled")
    assert tuple(out.shape[1:3]) == expected
    if width == height == 0:
        assert out is image


def test_lanczos_is_pillows_on_8_bit_copies(tmp_path, image):
    (out,) = call(ops.ImageScale, tmp_path, image=image, upscale_method="lanczos", width=64, height=40, crop="disabled")
    for i in range(2):
        pil = Image.fromarray(np.clip(255.0 * image[i].numpy(), 0, 255).astype(np.uint8))
        ref = np.asarray(pil.resize((64, 40), resample=Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        assert np.array_equal(out[i].numpy(), ref)
    mask = torch.rand(1, 1, 10, 12)
    assert ops.resize(mask, 6, 5, "lanczos").shape == (1, 1, 5, 6)
    with pytest.raises(NodeError, match="lanczos works on 1, 3 or 4 channels"):
        ops.resize(torch.rand(1, 2, 4, 4), 8, 8, "lanczos")


@pytest.mark.parametrize("scale,expected", [(1.0, (30, 50)), (0.5, (15, 25)), (0.01, (0, 0)), (1.5, (45, 75)),
                                            (0.25, (8, 12)), (0.33, (10, 16))])
def test_image_scale_by_sizes(tmp_path, image, scale, expected):
    """round(30 * 0.25) = round(7.5) = 8 and round(50 * 0.25) = round(12.5) = 12: Python rounds halves to even."""
    assert (round(30 * scale), round(50 * scale)) == expected
    if 0 in expected:
        with pytest.raises(NodeError, match="scale_by: the result would be 0x0 pixels"):
            call(ops.ImageScaleBy, tmp_path, image=image, upscale_method="area", scale_by=scale)
        return
    (out,) = call(ops.ImageScaleBy, tmp_path, image=image, upscale_method="area", scale_by=scale)
    assert tuple(out.shape[1:3]) == expected
    assert torch.equal(out, F.interpolate(image.movedim(-1, 1), size=expected, mode="area").movedim(1, -1))


@pytest.mark.parametrize("mp,steps", [(1.0, 1), (0.5, 1), (1.0, 64), (0.1, 8), (2.0, 16)])
def test_image_scale_to_total_pixels_sizes(tmp_path, mp, steps):
    img = torch.rand(1, 30, 50, 3)
    scale = math.sqrt(mp * 1024 * 1024 / (50 * 30))
    expected = (round(30 * scale / steps) * steps, round(50 * scale / steps) * steps)
    (out,) = call(ops.ImageScaleToTotalPixels, tmp_path, image=img, upscale_method="nearest-exact", megapixels=mp,
                  resolution_steps=steps)
    assert tuple(out.shape[1:3]) == expected
    assert all(v % steps == 0 for v in expected)
    if (mp, steps) == (1.0, 1):
        assert expected == (793, 1322)


def test_image_sizes_are_bounded_before_allocation(tmp_path, image, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_image_total_pixels", 1000)
    with pytest.raises(NodeError, match=r"width / height: 2 images of 100x100 .*max_image_total_pixels"):
        call(ops.ImageScale, tmp_path, image=image, upscale_method="bilinear", width=100, height=100, crop="disabled")
    monkeypatch.setattr(LIMITS, "max_image_pixels", 100)
    with pytest.raises(NodeError, match="width / height / batch_size: 20x20 is 400 pixels per image"):
        call(ops.EmptyImage, tmp_path, width=20, height=20, batch_size=1, color=0)


def test_image_scale_in_a_workflow_names_node_and_input(tmp_path, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_image_pixels", 10_000)
    doc = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
           "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bicubic",
                                                          "scale_by": 4.0}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    result = make_executor(tmp_path).run(doc)
    assert not result.ok and result.error["node_id"] == "2"
    assert result.error["exception_message"].startswith("scale_by: 256x256 is 65,536 pixels per image")
    doc["2"]["inputs"]["upscale_method"] = "lanczos3"
    with pytest.raises(WorkflowValidationError) as exc:
        make_executor(tmp_path).run(doc)
    assert exc.value.result.node_errors["2"]["errors"][0]["type"] == "value_not_in_list"


# --- latents ---------------------------------------------------------------------------------------------

@pytest.fixture
def latent():
    return {"samples": torch.randn(2, 4, 12, 20, generator=torch.Generator().manual_seed(1)),
            "noise_mask": torch.ones(2, 1, 12, 20)}


@pytest.mark.parametrize("width,height,expected", [
    (0, 0, (12, 20)), (256, 128, (16, 32)), (0, 200, (25, 41)), (300, 0, (22, 37)), (8, 8, (8, 8)),
    (0, 8, (8, 13)), (100, 60, (8, 12)),
])
def test_latent_upscale_sizes(tmp_path, latent, width, height, expected):
    """Each side at least 64 pixels, 0 keeps the aspect (rounded in latent pixels x 8 as ComfyUI does, then
    // 8): height 200 and 12x20 latents give width round(20 * 200 / 12) = 333 -> 41."""
    (out,) = call(ops.LatentUpscale, tmp_path, samples=latent, upscale_method="bilinear", width=width, height=height,
                  crop="disabled")
    assert tuple(out["samples"].shape[-2:]) == expected and out["samples"].shape[:2] == (2, 4)
    if expected != (12, 20):
        ref = F.interpolate(latent["samples"], size=expected, mode="bilinear")
        assert torch.equal(out["samples"], ref)
    assert out["noise_mask"] is latent["noise_mask"]  # other keys travel unchanged, as in ComfyUI


def test_latent_upscale_center_crop(tmp_path, latent):
    (out,) = call(ops.LatentUpscale, tmp_path, samples=latent, upscale_method="nearest-exact", width=128, height=128,
                  crop="center")
    assert ops.center_crop_box(20, 12, 16, 16) == (4, 0)
    assert torch.equal(out["samples"], F.interpolate(latent["samples"][..., 4:16], size=(16, 16),
                                                     mode="nearest-exact"))


@pytest.mark.parametrize("scale,expected", [(1.5, (18, 30)), (0.5, (6, 10)), (1.25, (15, 25)), (0.125, (2, 2))])
def test_latent_upscale_by_sizes(tmp_path, latent, scale, expected):
    """round(12 * 0.125) = round(1.5) = 2 and round(20 * 0.125) = round(2.5) = 2."""
    (out,) = call(ops.LatentUpscaleBy, tmp_path, samples=latent, upscale_method="area", scale_by=scale)
    assert tuple(out["samples"].shape[-2:]) == expected


def test_latent_sizes_are_bounded(tmp_path, latent, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_latent_pixels", 100_000)
    with pytest.raises(NodeError, match="scale_by: 2 latents of 320x192 image pixels .*max_latent_pixels"):
        call(ops.LatentUpscaleBy, tmp_path, samples=latent, upscale_method="bislerp", scale_by=2.0)
    with pytest.raises(NodeError, match="samples: expected a LATENT"):
        call(ops.LatentUpscaleBy, tmp_path, samples={"x": 1}, upscale_method="bislerp", scale_by=2.0)


def test_bislerp_worked_by_hand():
    """Two orthogonal unit vectors, 2 -> 4 columns: the taps sit at -0.25 (clamped), 0.25, 0.75 and 1.25
    (clamped), so the middle columns turn a quarter and three quarters of the right angle."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    out = ops.bislerp(x, 4, 1)[0, :, 0].T
    q, r = math.sin(0.75 * math.pi / 2), math.sin(0.25 * math.pi / 2)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [q, r], [r, q], [0.0, 1.0]]), atol=1e-6)


def test_bislerp_keeps_the_first_tap_for_same_directions():
    """ComfyUI's edge case: where two vectors point the same way, the first tap is kept as is (no lerp of
    lengths), so a field of parallel vectors becomes a nearest-lower-tap resize."""
    v = torch.tensor([0.6, 0.8, 0.0, 0.0]).reshape(1, 4, 1, 1)
    s = torch.rand(1, 1, 3, 5) + 0.5
    out = ops.bislerp(v * s, 9, 7)
    rows = ops._taps(3, 7, "cpu")[0]
    cols = ops._taps(5, 9, "cpu")[0]
    assert torch.allclose(out, (v * s[..., rows, :][..., cols]), atol=1e-6)


def test_bislerp_constant_field_and_opposites():
    c = torch.randn(1, 4, 1, 1).expand(2, 4, 3, 3)
    assert torch.allclose(ops.bislerp(c, 7, 5), c[:, :, :1, :1].expand(2, 4, 5, 7), atol=1e-6)
    x = torch.tensor([[1.0, 0.0], [-2.0, 0.0]]).T.reshape(1, 2, 1, 2)  # opposite: a plain lerp
    out = ops.bislerp(x, 4, 1)[0, :, 0].T
    assert torch.allclose(out[:, 0], torch.tensor([1.0, 0.25, -1.25, -2.0])) and torch.all(out[:, 1] == 0)


# --- image and mask operations ---------------------------------------------------------------------------

def test_empty_image_color(tmp_path):
    (img,) = call(ops.EmptyImage, tmp_path, width=3, height=2, batch_size=2, color=0xFF8000)
    assert img.shape == (2, 2, 3, 3) and img.dtype == torch.float32
    assert torch.equal(img[1, 1, 2], torch.tensor([1.0, 0x80 / 0xFF, 0.0]))
    d = info("EmptyImage")["input"]["required"]
    assert list(d) == ["width", "height", "batch_size", "color"]
    assert d["color"][1] == {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}


def test_image_batch_resizes_and_pads_alpha(tmp_path, image):
    other = torch.rand(1, 10, 10, 4)
    (out,) = call(ops.ImageBatch, tmp_path, image1=image, image2=other)
    assert out.shape == (3, 30, 50, 4)
    assert torch.equal(out[:2, ..., :3], image) and torch.all(out[:2, ..., 3] == 1)
    x, y = ops.center_crop_box(10, 10, 50, 30)
    ref = F.interpolate(other.movedim(-1, 1)[..., y:10 - y, x:10 - x], size=(30, 50), mode="bilinear").movedim(1, -1)
    assert torch.equal(out[2:], ref)
    (same,) = call(ops.ImageBatch, tmp_path, image1=image, image2=image[:1])
    assert torch.equal(same, torch.cat([image, image[:1]]))
    with pytest.raises(NodeError, match="image2: 1 channels cannot join a batch of 3"):
        call(ops.ImageBatch, tmp_path, image1=image, image2=torch.rand(1, 4, 4, 1))


def test_invert_and_masks(tmp_path):
    rgba = torch.rand(1, 4, 5, 4)
    (inv,) = call(ops.ImageInvert, tmp_path, image=rgba)
    assert torch.equal(inv[..., :3], 1 - rgba[..., :3]) and torch.equal(inv[..., 3], rgba[..., 3])
    (m,) = call(ops.ImageToMask, tmp_path, image=rgba, channel="green")
    assert torch.equal(m, rgba[..., 1]) and m.shape == (1, 4, 5)
    with pytest.raises(NodeError, match="channel: the image has 3 channels, so no 'alpha' channel"):
        call(ops.ImageToMask, tmp_path, image=rgba[..., :3], channel="alpha")
    (img,) = call(ops.MaskToImage, tmp_path, mask=m)
    assert img.shape == (1, 4, 5, 3) and torch.equal(img[..., 2], m)
    (back,) = call(ops.InvertMask, tmp_path, mask=m[0])
    assert back.shape == (1, 4, 5) and torch.equal(back[0], 1 - m[0])
    with pytest.raises(NodeError, match="mask: expected a MASK tensor"):
        call(ops.InvertMask, tmp_path, mask=rgba)
    assert info("ImageToMask")["input"]["required"]["channel"][0] == ["red", "green", "blue", "alpha"]


def test_image_composite_masked(tmp_path):
    dest = torch.zeros(2, 6, 8, 3)
    src = torch.ones(1, 4, 4, 3)
    (out,) = call(ops.ImageCompositeMasked, tmp_path, destination=dest, source=src, x=6, y=3, resize_source=False)
    assert out[:, 3:6, 6:8].eq(1).all() and out.sum() == 2 * 3 * 2 * 3  # cut at the right and bottom edges
    assert dest.eq(0).all()  # the destination itself is untouched
    mask = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    (blend,) = call(ops.ImageCompositeMasked, tmp_path, destination=dest, source=src[:, :2, :2], x=0, y=0,
                    resize_source=False, mask=mask)
    assert torch.equal(blend[0, :2, :2, 0], mask) and blend[:, 2:].eq(0).all()
    (full,) = call(ops.ImageCompositeMasked, tmp_path, destination=dest, source=src, x=0, y=0, resize_source=True)
    assert full.eq(1).all()
    d = info("ImageCompositeMasked")
    assert d["input_order"] == {"required": ["destination", "source", "x", "y", "resize_source"],
                                "optional": ["mask"]}


def test_canny_matches_kornia(tmp_path):
    from kornia.filters import canny

    img = torch.zeros(1, 32, 32, 3)
    img[:, 8:24, 8:24] = 1.0
    (edges,) = call(ops.Canny, tmp_path, image=img, low_threshold=0.4, high_threshold=0.8)
    ref = canny(img.movedim(-1, 1), 0.4, 0.8)[1]
    assert edges.shape == (1, 32, 32, 3) and torch.equal(edges[..., 0], ref[:, 0])
    assert edges[0, 8, 4:28, 0].sum() > 0 and edges[0, 16, 16, 0] == 0  # the square's border, not its inside
    with pytest.raises(NodeError, match="low_threshold: 0.9 is above high_threshold"):
        call(ops.Canny, tmp_path, image=img, low_threshold=0.9, high_threshold=0.5)
    d = info("Canny")["input"]["required"]
    assert d["low_threshold"][1] == {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}


def test_batch_images_node_is_comfyuis_autogrow(tmp_path):
    d = info("BatchImagesNode")
    assert d["input_order"]["required"] == ["images"]
    kind, opts = d["input"]["required"]["images"]
    assert kind == "COMFY_AUTOGROW_V3"
    assert opts["template"] == {"input": {"required": {"image": ["IMAGE", {}]}}, "prefix": "image", "min": 1,
                                "max": 50}
    assert info("BatchMasksNode")["input"]["required"]["masks"][1]["template"]["prefix"] == "mask"
    doc = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 2, "color": 0xFF0000}},
           "2": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0x00FF00}},
           "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0],
                                                             "images.image2": ["1", 0]}},
           "4": {"class_type": "GetImageSize", "inputs": {"image": ["3", 0]}},
           "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}}}
    result = make_executor(tmp_path).run(doc)
    assert result.ok, result.error
    assert result.values["4"] == (8, 6, 5)
    (batch,) = result.values["3"]
    assert torch.equal(batch[2, 0, 0], torch.tensor([0.0, 1.0, 0.0]))  # the square one, resized and cropped
    del doc["3"]["inputs"]["images.image0"]
    with pytest.raises(WorkflowValidationError) as exc:
        make_executor(tmp_path).run(doc)
    (err,) = exc.value.result.node_errors["3"]["errors"]
    assert err["type"] == "required_input_missing" and err["extra_info"]["input_name"] == "images.image0"


def test_batch_masks_node(tmp_path):
    a, b = torch.rand(1, 6, 8), torch.rand(2, 3, 4)
    inputs = BatchMasks.Inputs(**{"masks.mask0": a, "masks.mask1": b})
    (out,) = BatchMasks().execute(inputs, context(tmp_path))
    assert out.shape == (3, 6, 8) and torch.equal(out[0], a[0])
    x, y = ops.center_crop_box(4, 3, 8, 6)
    assert torch.equal(out[1:], F.interpolate(b[:, None, y:3 - y, x:4 - x], size=(6, 8), mode="bilinear")[:, 0])
    with pytest.raises(NodeError, match="masks.mask1: expected a MASK tensor"):
        BatchMasks().execute(BatchMasks.Inputs(**{"masks.mask0": a, "masks.mask1": torch.rand(1, 2, 2, 3)}),
                             context(tmp_path))


BatchMasks = ops.BatchMasksNode


# --- ResizeImageMaskNode (ComfyUI's DynamicCombo) --------------------------------------------------------

def resize_node(tmp_path, x, kind, scale_method="area", **opt):
    inputs = {"input": x, "resize_type": kind, "scale_method": scale_method,
              **{f"resize_type.{k}": v for k, v in opt.items()}}
    (out,) = ops.ResizeImageMaskNode().execute(ops.ResizeImageMaskNode.Inputs(**inputs), context(tmp_path))
    return out


def test_resize_image_mask_declaration_is_comfyuis_dynamic_combo():
    d = info("ResizeImageMaskNode")
    assert d["input_order"]["required"] == ["input", "resize_type", "scale_method"]
    assert d["input"]["required"]["input"] == ["IMAGE,MASK"]
    kind, opts = d["input"]["required"]["resize_type"]
    assert kind == "COMFY_DYNAMICCOMBO_V3"
    assert [o["key"] for o in opts["options"]] == [
        "scale dimensions", "scale by multiplier", "scale longer dimension", "scale shorter dimension",
        "scale width", "scale height", "scale total pixels", "match size", "scale to multiple"]
    by_key = {o["key"]: o["inputs"]["required"] for o in opts["options"]}
    assert list(by_key["scale dimensions"]) == ["width", "height", "crop"]
    assert by_key["scale dimensions"]["crop"][0] == ["disabled", "center"]
    assert by_key["scale dimensions"]["crop"][1]["default"] == "center"
    assert by_key["scale total pixels"]["multiple"][1]["default"] == 1
    assert by_key["scale to multiple"]["multiple"][1]["default"] == 8
    assert by_key["match size"]["match"] == ["IMAGE,MASK", {"tooltip": by_key["match size"]["match"][1]["tooltip"]}]
    assert d["input"]["required"]["scale_method"][1]["default"] == "area"
    assert d["output_name"] == ["resized"] and d["display_name"] == "Resize Image/Mask"


def test_resize_image_mask_rules(tmp_path, image):
    x = image  # 2 x 30 x 50
    ref = lambda w, h, crop="disabled", method="area": F.interpolate(  # noqa: E731
        ops.resize(x.movedim(-1, 1), w, h, method, crop), size=(h, w)).movedim(1, -1)
    assert torch.equal(resize_node(tmp_path, x, "scale dimensions", width=20, height=20), ref(20, 20, "center"))
    assert resize_node(tmp_path, x, "scale dimensions", width=0, height=0) is x
    assert resize_node(tmp_path, x, "scale dimensions", width=0, height=60, crop="disabled").shape == (2, 60, 100, 3)
    assert resize_node(tmp_path, x, "scale by multiplier", multiplier=0.5).shape == (2, 15, 25, 3)
    assert resize_node(tmp_path, x, "scale longer dimension", longer_size=100).shape == (2, 60, 100, 3)
    assert resize_node(tmp_path, x, "scale shorter dimension", shorter_size=45).shape == (2, 45, 75, 3)
    assert resize_node(tmp_path, x, "scale width", width=25).shape == (2, 15, 25, 3)
    assert resize_node(tmp_path, x, "scale height", height=15).shape == (2, 15, 25, 3)
    scale = math.sqrt(int(0.01 * 1024 * 1024) / (50 * 30))
    expected = (max(1, round(30 * scale / 8)) * 8, max(1, round(50 * scale / 8)) * 8)
    got = resize_node(tmp_path, x, "scale total pixels", megapixels=0.01, multiple=8)
    assert tuple(got.shape[1:3]) == expected == (80, 136)
    assert resize_node(tmp_path, x, "scale total pixels", megapixels=0.01).shape[1:3] == (79, 132)  # multiple 1
    match = torch.rand(1, 12, 16)  # a mask as the size reference
    assert torch.equal(resize_node(tmp_path, x, "match size", scale_method="bilinear", match=match),
                       ref(16, 12, "center", "bilinear"))
    # scale to multiple (default 8): 50x30 covers 48x24 at scale max(48/50, 24/30) = 0.96 -> 48x29 (ceil), then
    # the middle 24 rows
    cover = resize_node(tmp_path, x, "scale to multiple", scale_method="bilinear")
    full = ops.resize(x.movedim(-1, 1), 48, 29, "bilinear").movedim(1, -1)
    assert torch.equal(cover, full[:, 2:26])
    mask = torch.rand(3, 30, 50)
    out = resize_node(tmp_path, mask, "scale longer dimension", scale_method="lanczos", longer_size=25)
    assert out.shape == (3, 15, 25)
    assert torch.equal(out, ops.resize(mask[:, None], 25, 15, "lanczos")[:, 0])


def test_resize_image_mask_errors_name_the_input(tmp_path, image, monkeypatch):
    with pytest.raises(NodeError, match="resize_type.match: 'match size' needs this input"):
        resize_node(tmp_path, image, "match size")
    with pytest.raises(NodeError, match="the result would be 0x0 pixels"):
        resize_node(tmp_path, image, "scale longer dimension", longer_size=0)
    monkeypatch.setattr(LIMITS, "max_image_pixels", 1000)
    with pytest.raises(NodeError, match="resize_type.multiplier: 400x240 is 96,000 pixels per image"):
        resize_node(tmp_path, image, "scale by multiplier", multiplier=8.0)
    doc = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
           "2": {"class_type": "ResizeImageMaskNode", "inputs": {"input": ["1", 0], "resize_type": "scale by 2",
                                                                 "scale_method": "area",
                                                                 "resize_type.multiplier": 9.0}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    with pytest.raises(WorkflowValidationError) as exc:
        make_executor(tmp_path).run(doc)
    errs = {(e["type"], e["extra_info"]["input_name"]) for e in exc.value.result.node_errors["2"]["errors"]}
    assert errs == {("value_not_in_list", "resize_type"), ("value_bigger_than_max", "resize_type.multiplier")}


def test_resize_image_mask_from_an_editor_file(tmp_path):
    """As ComfyUI's templates save it: the option, then that option's widgets, then scale_method; a linked
    child widget (resize_type.width) takes its link."""
    from graph_runtime.ui_format import ui_to_api

    def node(nid, wv, extra_inputs=()):
        return {"id": nid, "type": "ResizeImageMaskNode", "widgets_values": wv,
                "inputs": [{"localized_name": "input", "name": "input", "type": "IMAGE,MASK", "link": nid * 10},
                           *extra_inputs],
                "outputs": [{"localized_name": "resized", "name": "resized", "type": "IMAGE", "links": []}]}

    width_link = {"localized_name": "width", "name": "resize_type.width", "type": "INT",
                  "widget": {"name": "resize_type.width"}, "link": 99}
    doc = {"links": [[20, 1, 0, 2, 0, "IMAGE"], [30, 1, 0, 3, 0, "IMAGE"], [99, 4, 0, 3, 1, "INT"],
                     [5, 3, 0, 5, 0, "IMAGE"], [6, 2, 0, 6, 0, "IMAGE"]],
           "nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [40, 20, 1, 0], "inputs": [],
                      "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [20, 30]}]},
                     node(2, ["scale longer dimension", 16, "lanczos"]),
                     node(3, ["scale dimensions", 1024, 10, "center", "bilinear"], [width_link]),
                     {"id": 4, "type": "PrimitiveInt", "widgets_values": [30, "fixed"], "inputs": [],
                      "outputs": [{"name": "INT", "type": "INT", "links": [99]}]},
                     {"id": 5, "type": "GetImageSize", "inputs": [{"name": "image", "type": "IMAGE", "link": 5}],
                      "outputs": []},
                     {"id": 6, "type": "GetImageSize", "inputs": [{"name": "image", "type": "IMAGE", "link": 6}],
                      "outputs": []}]}
    api = ui_to_api(doc, REG)
    assert api["2"]["inputs"] == {"resize_type": "scale longer dimension", "resize_type.longer_size": 16,
                                  "scale_method": "lanczos", "input": ["1", 0]}
    assert api["3"]["inputs"] == {"resize_type": "scale dimensions", "resize_type.width": ["4", 0],
                                  "resize_type.height": 10, "resize_type.crop": "center", "scale_method": "bilinear",
                                  "input": ["1", 0]}
    api["7"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}
    api["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}}
    result = make_executor(tmp_path).run(api)
    assert result.ok, result.error
    assert result.values["6"] == (16, 8, 1) and result.values["5"] == (30, 10, 1)


# --- batch, crop, rotate, flip, pad, stitch ----------------------------------------------------------------

def test_repeat_and_pick_from_batch(tmp_path):
    img = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 2, 2, 3).contiguous()
    (rep,) = call(ops.RepeatImageBatch, tmp_path, image=img, amount=2)
    assert rep[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]
    pick = lambda i, n: call(ops.ImageFromBatch, tmp_path, image=img, batch_index=i, length=n)[0][:, 0, 0, 0]  # noqa: E731
    assert pick(1, 5).tolist() == [1, 2]  # the length is cut at the end of the batch
    assert pick(-1, 1).tolist() == [2] and pick(-3, 2).tolist() == [0, 1]  # from the end
    assert pick(9, 1).tolist() == [2] and pick(-9, 1).tolist() == [0]  # clamped into the batch
    d = info("ImageFromBatch")["input"]["required"]
    assert d["batch_index"][1] == {"default": 0, "min": -16384, "max": 16384} and d["length"][1]["max"] == 4096


def test_crop_rotate_flip(tmp_path):
    img = torch.arange(12.0).reshape(1, 3, 4, 1).expand(1, 3, 4, 3).contiguous()
    (crop,) = call(ops.ImageCrop, tmp_path, image=img, width=2, height=5, x=3, y=1)
    assert crop.shape == (1, 2, 1, 3) and crop[0, :, 0, 0].tolist() == [7.0, 11.0]
    (rot,) = call(ops.ImageRotate, tmp_path, image=img, rotation="90 degrees")
    assert rot.shape == (1, 4, 3, 3) and rot[0, 0, :, 0].tolist() == [8.0, 4.0, 0.0]  # clockwise
    (half,) = call(ops.ImageRotate, tmp_path, image=img, rotation="180 degrees")
    assert torch.equal(half, img.flip(1).flip(2))
    (fx,) = call(ops.ImageFlip, tmp_path, image=img, flip_method="x-axis: vertically")
    (fy,) = call(ops.ImageFlip, tmp_path, image=img, flip_method="y-axis: horizontally")
    assert fx[0, 0, :, 0].tolist() == [8, 9, 10, 11] and fy[0, 0, :, 0].tolist() == [3, 2, 1, 0]


def test_scale_to_max_dimension_and_resize_and_pad(tmp_path, image):
    (m,) = call(ops.ImageScaleToMaxDimension, tmp_path, image=image, upscale_method="bicubic", largest_size=100)
    assert torch.equal(m, F.interpolate(image.movedim(-1, 1), size=(60, 100), mode="bicubic").movedim(1, -1))
    assert info("ImageScaleToMaxDimension")["input"]["required"]["upscale_method"][0] == [
        "area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]  # ComfyUI's list, as it is
    (p,) = call(ops.ResizeAndPadImage, tmp_path, image=image, target_width=64, target_height=64,
                padding_color="black", interpolation="bilinear")
    # 50x30 into 64x64: scale min(1.28, 2.13) -> 64x38, centred with 13 rows above and 13 below
    inner = F.interpolate(image.movedim(-1, 1), size=(38, 64), mode="bilinear").movedim(1, -1)
    assert p.shape == (2, 64, 64, 3) and torch.equal(p[:, 13:51], inner)
    assert p[:, :13].eq(0).all() and p[:, 51:].eq(0).all()


def test_image_stitch(tmp_path):
    a = torch.zeros(2, 4, 6, 3)
    b = torch.ones(1, 2, 2, 3)
    (right,) = call(ops.ImageStitch, tmp_path, image1=a, image2=b, direction="right", match_image_size=True,
                    spacing_width=0, spacing_color="white")
    assert right.shape == (2, 4, 10, 3)  # b resized (lanczos) to height 4, width int(4 * 1) = 4
    assert torch.equal(right[:, :, :6], a) and right[1, :, 6:].eq(1).all()  # b's last image repeats
    (up,) = call(ops.ImageStitch, tmp_path, image1=a, image2=b, direction="up", match_image_size=False,
                 spacing_width=3, spacing_color="red")
    # b's width padded to 6 (2 each side; black, since a colour gap pads with 0), a 4-row red gap (3 made
    # even), b above a
    assert up.shape == (2, 2 + 4 + 4, 6, 3)
    assert up[0, :2, :2].eq(0).all() and up[0, :2, 2:4].eq(1).all() and up[0, :2, 4:].eq(0).all()
    assert up[0, 2:6, :, 0].eq(1).all() and up[0, 2:6, :, 1:].eq(0).all() and torch.equal(up[:, 6:], a)
    (alone,) = call(ops.ImageStitch, tmp_path, image1=a, direction="left", match_image_size=True,
                    spacing_width=0, spacing_color="white")
    assert alone is a
    rgba = torch.rand(1, 4, 6, 4)
    (mixed,) = call(ops.ImageStitch, tmp_path, image1=rgba, image2=a[:1], direction="down",
                    match_image_size=True, spacing_width=2, spacing_color="black")
    assert mixed.shape == (1, 4 + 2 + 4, 6, 4) and mixed[0, 6:, :, 3].eq(1).all()  # an opaque alpha for a
    d = info("ImageStitch")
    assert d["input_order"] == {"required": ["image1", "direction", "match_image_size", "spacing_width",
                                             "spacing_color"], "optional": ["image2"]}


# --- masks ---------------------------------------------------------------------------------------------------

def test_mask_sources_and_crops(tmp_path):
    img = torch.zeros(1, 2, 3, 3)
    img[0, 1, 2] = torch.tensor([0x12, 0x34, 0x56]) / 255.0
    (m,) = call(ops.ImageColorToMask, tmp_path, image=img, color=0x123456)
    assert m.shape == (1, 2, 3) and m.sum() == 1 and m[0, 1, 2] == 1
    (solid,) = call(ops.SolidMask, tmp_path, value=0.25, width=5, height=4)
    assert solid.shape == (1, 4, 5) and solid.eq(0.25).all()
    (crop,) = call(ops.CropMask, tmp_path, mask=torch.arange(12.0).reshape(1, 3, 4), x=2, y=1, width=9, height=1)
    assert crop.tolist() == [[[6.0, 7.0]]]
    (t,) = call(ops.ThresholdMask, tmp_path, mask=torch.tensor([[[0.2, 0.5, 0.7]]]), value=0.5)
    assert t.tolist() == [[[0.0, 0.0, 1.0]]]


@pytest.mark.parametrize("operation,expected", [  # and/or/xor on rounded masks: 0.5 rounds to 0 (half to even)
    ("multiply", [0.0, 0.25, 0.5]), ("add", [1.0, 1.0, 1.0]), ("subtract", [0.0, 0.0, 0.5]),
    ("and", [0.0, 0.0, 0.0]), ("or", [1.0, 0.0, 1.0]), ("xor", [1.0, 0.0, 1.0]),
])
def test_mask_composite(tmp_path, operation, expected):
    dest = torch.tensor([[[0.0, 0.5, 1.0, 0.3]]])
    src = torch.tensor([[[1.0, 0.5, 0.5]]])
    (out,) = call(ops.MaskComposite, tmp_path, destination=dest, source=src, x=0, y=0, operation=operation)
    assert torch.allclose(out[0, 0, :3], torch.tensor(expected)) and out[0, 0, 3] == 0.3
    (off,) = call(ops.MaskComposite, tmp_path, destination=dest, source=src, x=3, y=0, operation="add")
    assert torch.allclose(off, torch.tensor([[[0.0, 0.5, 1.0, 1.0]]]))  # cut at the right edge


def test_feather_mask_keeps_comfyuis_ramps(tmp_path):
    ones = torch.ones(1, 1, 4)
    (left,) = call(ops.FeatherMask, tmp_path, mask=ones, left=2, top=0, right=0, bottom=0)
    assert left.tolist() == [[[0.5, 1.0, 1.0, 1.0]]]
    (right,) = call(ops.FeatherMask, tmp_path, mask=ones, left=0, top=0, right=2, bottom=0)
    assert right.tolist() == [[[0.5, 1.0, 1.0, 1.0]]]  # index -0 is column 0; the last column gets 2/2


@pytest.mark.parametrize("expand,tapered", [(2, True), (3, False), (-1, True), (-2, False), (0, True)])
def test_grow_mask_is_scipys_grey_morphology(tmp_path, expand, tapered):
    import scipy.ndimage

    g = torch.Generator().manual_seed(3)
    m = (torch.rand(2, 9, 11, generator=g) > 0.7).float() * torch.rand(2, 9, 11, generator=g)
    (out,) = call(ops.GrowMask, tmp_path, mask=m, expand=expand, tapered_corners=tapered)
    c = 0 if tapered else 1
    fp = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    for i in range(2):
        ref = m[i].numpy()
        for _ in range(abs(expand)):
            ref = (scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation)(ref, footprint=fp)
        assert np.array_equal(out[i].numpy(), ref)


def test_grow_mask_large_expand_is_cut_to_what_changes_anything(tmp_path):
    m = torch.zeros(1, 5, 6)
    m[0, 2, 3] = 1
    (out,) = call(ops.GrowMask, tmp_path, mask=m, expand=16384, tapered_corners=True)
    assert out.eq(1).all()


def test_split_and_join_alpha(tmp_path):
    rgba = torch.rand(2, 4, 5, 4)
    img, mask = call(ops.SplitImageWithAlpha, tmp_path, image=rgba)
    assert torch.equal(img, rgba[..., :3]) and torch.equal(mask, 1 - rgba[..., 3])
    _, none = call(ops.SplitImageWithAlpha, tmp_path, image=rgba[..., :3])
    assert none.eq(0).all()
    (joined,) = call(ops.JoinImageWithAlpha, tmp_path, image=img, alpha=mask[:1])
    assert joined.shape == (1, 4, 5, 4) and torch.allclose(joined[..., 3], rgba[:1, ..., 3])
    (resized,) = call(ops.JoinImageWithAlpha, tmp_path, image=img, alpha=torch.zeros(2, 2, 2))
    assert resized.shape == (2, 4, 5, 4) and resized[..., 3].eq(1).all()


def test_mask_preview_shows_grey_images(tmp_path):
    from nodes.images import MaskPreview

    ctx = context(tmp_path)
    ctx.paths.temp.mkdir(parents=True, exist_ok=True)
    res = MaskPreview().execute(MaskPreview.Inputs(mask=torch.full((2, 3, 4), 0.5)), ctx)
    assert [i["type"] for i in res.ui["images"]] == ["temp", "temp"]
    with Image.open(ctx.paths.temp / res.ui["images"][0]["filename"]) as png:
        assert png.size == (4, 3) and png.convert("RGB").getpixel((0, 0)) == (128, 128, 128)


# --- filters -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"])
def test_image_blend_modes(tmp_path, mode):
    a = torch.tensor([0.1, 0.3, 0.6, 0.9]).reshape(1, 1, 4, 1).expand(1, 1, 4, 3)
    b = torch.tensor([0.8, 0.2, 0.5, 0.4]).reshape(1, 1, 4, 1).expand(1, 1, 4, 3)
    (out,) = call(ops.ImageBlend, tmp_path, image1=a, image2=b, blend_factor=0.75, blend_mode=mode)
    x, y = a[0, 0, :, 0].tolist(), b[0, 0, :, 0].tolist()

    def mixed(p, q):
        if mode == "multiply":
            return p * q
        if mode == "screen":
            return 1 - (1 - p) * (1 - q)
        if mode == "overlay":
            return 2 * p * q if p <= 0.5 else 1 - 2 * (1 - p) * (1 - q)
        if mode == "soft_light":
            g = ((16 * p - 12) * p + 4) * p if p <= 0.25 else p ** 0.5
            return p - (1 - 2 * q) * p * (1 - p) if q <= 0.5 else p + (2 * q - 1) * (g - p)
        return p - q if mode == "difference" else q

    expected = [min(1.0, max(0.0, p * 0.25 + mixed(p, q) * 0.75)) for p, q in zip(x, y, strict=True)]
    assert torch.allclose(out[0, 0, :, 0], torch.tensor(expected), atol=1e-6)


def test_blur_sharpen_and_noise(tmp_path):
    flat = torch.full((1, 9, 9, 3), 0.4)
    (blurred,) = call(ops.ImageBlur, tmp_path, image=flat, blur_radius=3, sigma=1.0)
    (sharp,) = call(ops.ImageSharpen, tmp_path, image=flat, sharpen_radius=2, sigma=1.0, alpha=1.0)
    assert torch.allclose(blurred, flat) and torch.allclose(sharp, flat, atol=1e-5)  # a flat image stays flat
    dot = torch.zeros(1, 9, 9, 1)
    dot[0, 4, 4] = 1.0
    (spread,) = call(ops.ImageBlur, tmp_path, image=dot, blur_radius=1, sigma=1.0)
    # ComfyUI's kernel: exp(-d^2 / 2) over a -1..1 grid of 3 points, normalised
    k = torch.exp(-torch.tensor([[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]) / 2)
    assert torch.allclose(spread[0, 3:6, 3:6, 0], k / k.sum()) and torch.isclose(spread.sum(), torch.tensor(1.0))
    (edge,) = call(ops.ImageSharpen, tmp_path, image=dot, sharpen_radius=1, sigma=1.0, alpha=0.5)
    assert edge[0, 4, 4, 0] == 1.0 and edge[0, 4, 3, 0] == 0.0  # the centre gains, neighbours go below 0 (clamped)
    with pytest.raises(NodeError, match="blur_radius: 31 is too large for a 9x9 image"):
        call(ops.ImageBlur, tmp_path, image=flat, blur_radius=31, sigma=1.0)
    img = torch.rand(2, 5, 6, 3)
    (noisy,) = call(ops.ImageAddNoise, tmp_path, image=img, seed=7, strength=0.3)
    ref = torch.clip(img + 0.3 * torch.randn(img.size(), generator=torch.Generator().manual_seed(7)), 0, 1)
    assert torch.equal(noisy, ref)
