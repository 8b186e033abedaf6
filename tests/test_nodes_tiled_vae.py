"""VAEDecodeTiled and VAEEncodeTiled on the embedded model: equal to the plain decode/encode where one tile holds
the whole picture, close to it where tiles are blended (thresholds measured here), and ComfyUI's tiling rules."""

from __future__ import annotations

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context, make_registry

from graph_runtime import NodeError
from nodes.latents import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled, tiled

# mean abs difference to the plain result on the 64x96 picture below with 128-pixel tiles and 32 of overlap:
# measured 0.0139 (decode, pixels in 0..1) and 0.0110 (encode, latents of mean magnitude about 1)
DECODE_MAE, ENCODE_MAE = 0.02, 0.016


@pytest.fixture(scope="module")
def picture():
    img = torch.zeros(1, 64, 96, 3)
    img[:, 10:50, 20:70, 0] = 1.0
    img[..., 2] += 0.3
    return img


@pytest.fixture(scope="module")
def plain(loaded, picture, tmp_path_factory):
    ctx = context(tmp_path_factory.mktemp("plain"))
    (lat,) = VAEEncode().execute(VAEEncode.Inputs(pixels=picture, vae=loaded.vae), ctx)
    (img,) = VAEDecode().execute(VAEDecode.Inputs(samples=lat, vae=loaded.vae), ctx)
    return lat, img


def test_declarations_are_comfyuis():
    reg = make_registry()
    for name, first in (("VAEDecodeTiled", ["samples", "vae"]), ("VAEEncodeTiled", ["pixels", "vae"])):
        d = reg.get(name).describe()
        assert d["input_order"]["required"] == [*first, "tile_size", "overlap", "temporal_size", "temporal_overlap"]
        req = d["input"]["required"]
        assert req["tile_size"][1]["default"] == 512 and req["tile_size"][1]["min"] == 64
        assert req["overlap"][1] == {"default": 64, "min": 0, "max": 4096, "step": 32, "advanced": True}
        assert req["temporal_size"][1]["default"] == 64 and req["temporal_overlap"][1]["default"] == 8
    assert reg.get("VAEDecodeTiled").describe()["display_name"] == "VAE Decode (Tiled)"


def test_one_tile_holding_everything_is_the_plain_result(loaded, picture, plain, tmp_path):
    lat, img = plain
    ctx = context(tmp_path)
    (dec,) = VAEDecodeTiled().execute(VAEDecodeTiled.Inputs(samples=lat, vae=loaded.vae), ctx)
    assert dec.shape == img.shape and (dec - img).abs().max() < 1e-6  # the mean of three equal decodes
    (enc,) = VAEEncodeTiled().execute(VAEEncodeTiled.Inputs(pixels=picture, vae=loaded.vae), ctx)
    assert (enc["samples"] - lat["samples"]).abs().max() < 1e-5


def test_blended_tiles_stay_close_to_the_plain_result(loaded, picture, plain, tmp_path):
    lat, img = plain
    ctx = context(tmp_path)
    (dec,) = VAEDecodeTiled().execute(VAEDecodeTiled.Inputs(samples=lat, vae=loaded.vae, tile_size=128, overlap=32),
                                      ctx)
    assert dec.shape == img.shape and 0 < (dec - img).abs().mean() < DECODE_MAE
    (enc,) = VAEEncodeTiled().execute(VAEEncodeTiled.Inputs(pixels=picture, vae=loaded.vae, tile_size=128,
                                                            overlap=32), ctx)
    assert enc["samples"].shape == lat["samples"].shape
    assert 0 < (enc["samples"] - lat["samples"]).abs().mean() < ENCODE_MAE


def test_overlap_feathering_beats_hard_seams(loaded, picture, plain, tmp_path):
    lat, _ = plain
    ctx = context(tmp_path)
    errors = []
    for overlap in (0, 16):
        (enc,) = VAEEncodeTiled().execute(VAEEncodeTiled.Inputs(pixels=picture, vae=loaded.vae, tile_size=64,
                                                                overlap=overlap), ctx)
        errors.append((enc["samples"] - lat["samples"]).abs().mean())
    assert errors[1] < errors[0] * 0.8  # measured 0.050 against 0.077


def test_tiling_rebuilds_a_pointwise_function_exactly():
    """Blending weights sum to one everywhere, with ComfyUI's tile positions (the last tile pulled back to the
    edge), for an upscaling and a downscaling function."""
    x = torch.randn(2, 3, 21, 34)
    up = tiled(x, lambda t: (t * 2).repeat_interleave(4, -1).repeat_interleave(4, -2), (8, 5), 2, 4, 3)
    assert torch.allclose(up, (x * 2).repeat_interleave(4, -1).repeat_interleave(4, -2), atol=1e-5)
    y = torch.randn(1, 2, 32, 48)
    down = tiled(y, lambda t: t[..., ::8, ::8] + 1, (16, 24), 8, 1 / 8, 2)
    assert down.shape == (1, 2, 4, 6) and torch.allclose(down, y[..., ::8, ::8] + 1, atol=1e-5)


def test_bad_inputs_name_the_input(loaded, picture, plain, tmp_path):
    ctx = context(tmp_path)
    with pytest.raises(NodeError, match=r"overlap: 32 must be less than half the tile_size \(64\)"):
        VAEEncodeTiled().execute(VAEEncodeTiled.Inputs(pixels=picture, vae=loaded.vae, tile_size=64, overlap=32), ctx)
    with pytest.raises(NodeError, match="samples: the VAE expects 4 latent channels, got 16"):
        VAEDecodeTiled().execute(VAEDecodeTiled.Inputs(samples={"samples": torch.zeros(1, 16, 8, 8)},
                                                       vae=loaded.vae), ctx)
    with pytest.raises(NodeError, match="vae: expected a VAE"):
        VAEDecodeTiled().execute(VAEDecodeTiled.Inputs(samples=plain[0], vae="vae.safetensors"), ctx)
