"""EmptyLatent, VAEEncode / VAEDecode and latent previews."""

from __future__ import annotations

import io

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context
from PIL import Image

from graph_runtime import NodeError
from graph_runtime.limits import LIMITS
from nodes.latents import EmptyLatent, VAEDecode, VAEEncode
from nodes.preview import latent_preview_jpeg

# mean abs error over pixels in 0..1 for the shipped VAE on this synthetic picture (not from its training
# data: a red square on a blue-tinted black); measured 0.105. Procedural pictures round-trip closer
# (tests/test_embedded_model.py).
ROUND_TRIP_MAE = 0.13


def test_empty_latent(tmp_path):
    (lat,) = EmptyLatent().execute(EmptyLatent.Inputs(width=96, height=64, batch_size=3), context(tmp_path))
    assert lat["samples"].shape == (3, 4, 8, 12) and not lat["samples"].any()


def test_empty_latent_cap_is_checked_before_allocating(tmp_path, monkeypatch):
    def no_alloc(*a, **k):
        raise AssertionError("allocated")

    monkeypatch.setattr(torch, "zeros", no_alloc)
    with pytest.raises(NodeError, match=r"16384 x 16384 x batch 1 = 268,435,456 pixels .* 67,108,864 .*max_latent_pixels"):
        EmptyLatent().execute(EmptyLatent.Inputs(width=16384, height=16384, batch_size=1), context(tmp_path))
    with pytest.raises(NodeError, match="multiple of 8"):
        EmptyLatent().execute(EmptyLatent.Inputs(width=100, height=64, batch_size=1), context(tmp_path))
    assert 2048 * 2048 * 16 == LIMITS.max_latent_pixels


def test_vae_round_trip(loaded, tmp_path):
    """Encode -> decode of a simple picture stays close (threshold measured on the embedded model)."""
    img = torch.zeros(1, 64, 64, 3)
    img[:, 16:48, 16:48, 0] = 1.0  # a red square on black
    img[:, :, :, 2] += 0.25
    ctx = context(tmp_path)
    (lat,) = VAEEncode().execute(VAEEncode.Inputs(pixels=img, vae=loaded.vae), ctx)
    assert lat["samples"].shape == (1, 4, 8, 8)
    (again,) = VAEEncode().execute(VAEEncode.Inputs(pixels=img, vae=loaded.vae), ctx)
    assert torch.equal(lat["samples"], again["samples"])  # deterministic (posterior mode)
    (out,) = VAEDecode().execute(VAEDecode.Inputs(samples=lat, vae=loaded.vae), ctx)
    assert out.shape == img.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert 0 <= out.min() and out.max() <= 1
    assert (out - img).abs().mean() < ROUND_TRIP_MAE


def test_vae_decode_rejects_bad_latents(loaded, tmp_path):
    with pytest.raises(NodeError, match="latent channels"):
        VAEDecode().execute(VAEDecode.Inputs(samples={"samples": torch.zeros(1, 3, 8, 8)}, vae=loaded.vae),
                            context(tmp_path))


def test_latent_preview_jpeg():
    data = latent_preview_jpeg(torch.randn(2, 4, 8, 12))
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and min(img.size) >= 64 and img.size[0] > img.size[1]
    big = Image.open(io.BytesIO(latent_preview_jpeg(torch.randn(1, 4, 64, 64))))
    assert big.size == (256, 256)
