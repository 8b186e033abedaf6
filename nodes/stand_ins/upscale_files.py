"""Tiny ESRGAN-family upscale networks (RRDB and the compact Real-ESRGAN one) with random weights, and the
original ESRGAN key layout, for UpscaleModelLoader: the scale a stand-in takes is the one its file name says."""

from __future__ import annotations

import re

FEAT, BLOCKS, GROW = 8, 2, 4
#: scales an RRDB network is built for: scale -> (2x upsampling convolutions, pixel-unshuffle factor)
RRDB_SCALES = {1: (2, 4), 2: (2, 2), 4: (2, 1), 8: (3, 1)}
DEFAULT_SCALE = 4
_SCALE_IN_NAME = re.compile(r"(?<![0-9])([1248])x(?![0-9])|x([1248])(?![0-9])")


def rrdb(upsamples: int = 2, unshuffle: int = 1, seed: int = 0):
    """A tiny RRDB (ESRGAN / Real-ESRGAN) network of scale ``2 ** upsamples / unshuffle``."""
    import torch

    from nodes.upscale_models import _rrdb_classes

    torch.manual_seed(seed)
    net = _rrdb_classes()(3, 3, FEAT, BLOCKS, GROW, upsamples, unshuffle).eval()
    with torch.no_grad():  # small weights keep a random network's output in a visible range
        for p in net.parameters():
            p.mul_(0.5)
    return net


def compact(seed: int = 2, scale: int = 4):
    """A tiny compact Real-ESRGAN (SRVGGNet) network."""
    import torch

    from nodes.upscale_models import _compact_class

    torch.manual_seed(seed)
    net = _compact_class()(3, FEAT, 2, scale).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    return net


def original_layout(state: dict, blocks: int = BLOCKS) -> dict:
    """BasicSR's names -> the original ESRGAN names (model.0, model.1.sub.N.RDBk.convj.0, model.3, ...)."""
    ups = sorted({int(m[1]) for k in state if (m := re.match(r"conv_up(\d+)\.", k))})
    n = len(ups)
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "conv_hr": f"model.{3 * n + 2}",
             "conv_last": f"model.{3 * n + 4}"} | {f"conv_up{u}": f"model.{3 * u}" for u in ups}
    out = {}
    for k, v in state.items():
        if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        else:
            head, _, leaf = k.rpartition(".")
            out[f"{names[head]}.{leaf}"] = v
    return out


def scale_of_name(name: str) -> int:
    """The scale a model's file name says (``4x-UltraSharp``, ``RealESRGAN_x2``), else 4x, the usual one."""
    m = _SCALE_IN_NAME.search(name.lower().rsplit("/", 1)[-1])
    return int(m[1] or m[2]) if m else DEFAULT_SCALE


def rrdb_state(scale: int) -> dict:
    """The tensors of a tiny RRDB network of ``scale``, as BasicSR names them."""
    upsamples, unshuffle = RRDB_SCALES[scale]
    return {k: v.contiguous() for k, v in rrdb(upsamples, unshuffle).state_dict().items()}
