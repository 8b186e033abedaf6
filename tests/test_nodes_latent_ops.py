"""ComfyUI's latent batch and transform nodes, checked against ComfyUI's arithmetic (positions in image pixels
// 8, clamping, feather ramps) and with the LATENT's other keys (noise_mask, batch_index) carried along."""

from __future__ import annotations

import pytest
import torch
from nodes_support import context, make_registry

from graph_runtime import NodeError
from graph_runtime.limits import LIMITS
from nodes import latent_ops as ops

REG = make_registry()


def call(cls, tmp_path, **inputs):
    return cls().execute(cls.Inputs(**inputs), context(tmp_path))[0]


def numbered(b=4, c=4, h=16, w=16):
    return torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1).expand(b, c, h, w).contiguous()


def test_latent_from_batch_and_repeat(tmp_path):
    lat = {"samples": numbered(), "noise_mask": torch.arange(2.0).reshape(2, 1, 1, 1).expand(2, 1, 8, 8)}
    out = call(ops.LatentFromBatch, tmp_path, samples=lat, batch_index=2, length=5)
    assert out["samples"][:, 0, 0, 0].tolist() == [2, 3] and out["batch_index"] == [2, 3]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [0, 1]  # the masks cycle over the batch first
    again = call(ops.LatentFromBatch, tmp_path, samples=out, batch_index=1, length=1)
    assert again["batch_index"] == [3]  # the original position is kept
    rep = call(ops.RepeatLatentBatch, tmp_path, samples=out, amount=3)
    assert rep["samples"][:, 0, 0, 0].tolist() == [2, 3] * 3 and rep["batch_index"] == [2, 3, 4, 5, 6, 7]
    assert rep["noise_mask"].shape[0] == 6
    assert call(ops.RepeatLatentBatch, tmp_path, samples={"samples": numbered(1)}, amount=2)["samples"].shape[0] == 2
    d = REG.get("LatentFromBatch").describe()["input"]["required"]
    assert d["batch_index"][1] == {"default": 0, "min": 0, "max": 63} and d["length"][1]["max"] == 64


def test_repeat_latent_batch_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_latent_pixels", 10_000)
    with pytest.raises(NodeError, match="amount: 8 latents of 128x128 .*max_latent_pixels"):
        call(ops.RepeatLatentBatch, tmp_path, samples={"samples": numbered(2)}, amount=4)


def test_rotate_flip_crop(tmp_path):
    s = torch.arange(2 * 3 * 4.0).reshape(1, 2, 3, 4)
    lat = {"samples": s, "noise_mask": torch.ones(1, 1, 3, 4)}
    rot = call(ops.LatentRotate, tmp_path, samples=lat, rotation="90 degrees")
    assert torch.equal(rot["samples"], torch.rot90(s, k=1, dims=[3, 2])) and rot["noise_mask"] is lat["noise_mask"]
    flip = call(ops.LatentFlip, tmp_path, samples=lat, flip_method="y-axis: horizontally")
    assert torch.equal(flip["samples"], s.flip(3))
    big = {"samples": torch.arange(20 * 20.0).reshape(1, 1, 20, 20)}
    crop = call(ops.LatentCrop, tmp_path, samples=big, width=64, height=128, x=800, y=8)
    # x // 8 = 100 is pulled back to 20 - 8 = 12; 8 wide (64 / 8), 16 high but cut at the edge
    assert torch.equal(crop["samples"], big["samples"][:, :, 1:17, 12:20])


def test_latent_composite_with_feather(tmp_path):
    to = {"samples": torch.zeros(1, 1, 8, 8)}
    src = {"samples": torch.ones(1, 1, 4, 4)}
    hard = call(ops.LatentComposite, tmp_path, samples_to=to, samples_from=src, x=16, y=48, feather=0)
    assert hard["samples"][0, 0, 6:8, 2:6].eq(1).all() and hard["samples"].sum() == 8  # cut at the bottom
    soft = call(ops.LatentComposite, tmp_path, samples_to=to, samples_from=src, x=16, y=16, feather=16)
    # feather 2 latent pixels on each side inside the target: ramps 0.5, 1 from every edge, corners multiplied
    expected = torch.tensor([0.5, 1.0, 1.0, 0.5])
    assert torch.allclose(soft["samples"][0, 0, 2:6, 2:6], expected[:, None] * expected[None, :])
    edge = call(ops.LatentComposite, tmp_path, samples_to=to, samples_from=src, x=0, y=0, feather=16)
    assert edge["samples"][0, 0, 0, 0] == 1.0 and edge["samples"][0, 0, 3, 3] == 0.25  # no ramp on the edges


def test_latent_blend_and_masked_composite(tmp_path):
    a, b = {"samples": torch.ones(1, 4, 8, 8)}, {"samples": torch.zeros(1, 4, 8, 8)}
    blend = call(ops.LatentBlend, tmp_path, samples1=a, samples2=b, blend_factor=0.25)
    assert blend["samples"].eq(0.25).all()
    small = {"samples": torch.zeros(1, 4, 4, 4)}
    resized = call(ops.LatentBlend, tmp_path, samples1=a, samples2=small, blend_factor=1.0)
    assert resized["samples"].eq(1).all()
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 16:] = 1.0  # the right half of the source
    out = call(ops.LatentCompositeMasked, tmp_path, destination=b, source={"samples": torch.ones(1, 4, 4, 4)},
               x=16, y=8, resize_source=False, mask=mask)
    region = out["samples"][0, 0, 1:5, 2:6]
    assert region[:, 2:].eq(1).all() and region[:, :1].eq(0).all() and out["samples"][0, 0, 0].eq(0).all()
    with pytest.raises(NodeError, match="source: 16 latent channels cannot go into 4"):
        call(ops.LatentCompositeMasked, tmp_path, destination=b, source={"samples": torch.zeros(1, 16, 4, 4)},
             x=0, y=0, resize_source=False)
    d = REG.get("LatentCompositeMasked").describe()
    assert d["input_order"] == {"required": ["destination", "source", "x", "y", "resize_source"],
                                "optional": ["mask"]}
