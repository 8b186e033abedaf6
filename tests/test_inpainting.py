"""Inpainting: VAEEncodeForInpaint (grey masked pixels, the grown mask), SetLatentNoiseMask, the Sampler keeping
the unmasked part at the input latent (k-diffusion rules and diffusers schedulers), InpaintModelConditioning,
and an inpainting UNet's extra input channels (mask, masked image latents)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context
from tiny_sd import single_thread

from graph_runtime import NodeError
from nodes.conditioning import encode as encode_text
from nodes.inpainting import InpaintModelConditioning, SetLatentNoiseMask, VAEEncodeForInpaint, latent_mask
from nodes.latents import encode as vae_encode
from nodes.sampling import make_schedule, run_sampler, schedule_for_sigmas
from schedulers import comfy_names

SIZE = 64


def picture() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, SIZE, SIZE, 3, generator=g)


def left_half() -> torch.Tensor:
    m = torch.zeros(1, SIZE, SIZE)
    m[:, :, : SIZE // 2] = 1.0
    return m


def test_vae_encode_for_inpaint(loaded, tmp_path):
    pixels, mask = picture(), torch.zeros(1, SIZE, SIZE)
    mask[0, 20, 30] = 1.0
    ctx = context(tmp_path)
    (lat,) = VAEEncodeForInpaint().execute(
        VAEEncodeForInpaint.Inputs(pixels=pixels, vae=loaded.vae, mask=mask, grow_mask_by=6), ctx)
    grown = lat["noise_mask"]
    assert grown.shape == (1, 1, SIZE, SIZE)
    # a 6x6 kernel padded by 3 (then cut to the image): the pixel grows to rows / columns -2 .. +3
    ys, xs = torch.nonzero(grown[0, 0], as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 23, 28, 33) and grown.sum() == 36
    grey = pixels.clone()
    grey[0, 20, 30] = 0.5
    assert torch.equal(lat["samples"], vae_encode(loaded.vae, grey, ctx).cpu())
    (flat,) = VAEEncodeForInpaint().execute(
        VAEEncodeForInpaint.Inputs(pixels=pixels, vae=loaded.vae, mask=mask, grow_mask_by=0), ctx)
    assert torch.equal(flat["noise_mask"][0], mask)
    assert VAEEncodeForInpaint.Inputs.model_fields["grow_mask_by"].default == 6


def test_set_latent_noise_mask(tmp_path):
    lat = {"samples": torch.zeros(2, 4, 8, 8)}
    (out,) = SetLatentNoiseMask().execute(SetLatentNoiseMask.Inputs(samples=lat, mask=torch.ones(16, 16)),
                                          context(tmp_path))
    assert out["noise_mask"].shape == (1, 1, 16, 16) and out["samples"] is lat["samples"]
    with pytest.raises(NodeError, match="mask: expected a MASK"):
        SetLatentNoiseMask().execute(SetLatentNoiseMask.Inputs(samples=lat, mask="x"), context(tmp_path))


def test_latent_mask_is_comfyuis_reshape():
    m = left_half()
    out = latent_mask(m, (3, 4, 8, 8))
    want = torch.nn.functional.interpolate(m.reshape(1, 1, SIZE, SIZE), size=(8, 8), mode="bilinear")
    assert out.shape == (3, 4, 8, 8) and torch.equal(out[2, 3], want[0, 0])


def schedules(model):
    sigmas = comfy_names.denoised_sigmas("normal", 4, 1.0, model.scheduler_config)[0]
    return {"euler (k-diffusion)": schedule_for_sigmas(model, sigmas, "euler"),
            "dpmpp_2m (k-diffusion)": schedule_for_sigmas(model, sigmas, "dpmpp_2m"),
            "ddim (diffusers)": make_schedule(model, "ddim", 4)}


@pytest.fixture(scope="module")
def prompts(loaded):
    return encode_text(loaded.clip, "a red circle"), encode_text(loaded.clip, "")


@pytest.mark.parametrize("which", ["euler (k-diffusion)", "dpmpp_2m (k-diffusion)", "ddim (diffusers)"])
def test_sampler_keeps_the_unmasked_part(loaded, prompts, tmp_path, which):
    ctx = context(tmp_path)
    model = loaded.model
    schedule = schedules(model)[which]
    samples = vae_encode(loaded.vae, picture(), ctx).cpu()
    pos, neg = prompts
    with single_thread():
        free = run_sampler(ctx, model, pos, neg, {"samples": samples}, schedule, 5, 5.0).samples
        masked = run_sampler(ctx, model, pos, neg, {"samples": samples, "noise_mask": left_half()}, schedule, 5,
                             5.0).samples
        whole = run_sampler(ctx, model, pos, neg, {"samples": samples, "noise_mask": torch.ones(1, 8, 8)},
                            schedule, 5, 5.0).samples
    keep = latent_mask(left_half(), tuple(samples.shape)) == 0
    assert keep.sum() == samples.numel() // 2  # 8 latent columns of 8: the bilinear edge column is not kept
    assert torch.equal(masked[keep], samples[keep])
    assert (masked[~keep] - samples[~keep]).abs().max() > 0.05
    # a mask of ones (at the latent's size: no resampling) changes nothing (up to the last bits, which CPU
    # kernels make depend on the input's memory alignment)
    assert torch.allclose(whole, free, atol=1e-4)


def test_inpaint_model_conditioning_on_a_plain_model(loaded, prompts, tmp_path):
    """Other models ignore the extra channels: the same as the noise mask on the image's latent."""
    ctx = context(tmp_path)
    pos, neg = prompts
    p2, n2, lat = InpaintModelConditioning().execute(InpaintModelConditioning.Inputs(
        positive=pos, negative=neg, vae=loaded.vae, pixels=picture(), mask=left_half(), noise_mask=True), ctx)
    assert p2.concat_latent.shape == (1, 4, 8, 8) and p2.concat_mask.shape == (1, 1, SIZE, SIZE)
    assert n2.concat_latent is p2.concat_latent and "noise_mask" in lat
    grey = picture()
    grey[:, :, : SIZE // 2] = 0.5
    assert torch.equal(p2.concat_latent, vae_encode(loaded.vae, grey, ctx).cpu())
    schedule = schedules(loaded.model)["euler (k-diffusion)"]
    with single_thread():
        ours = run_sampler(ctx, loaded.model, p2, n2, lat, schedule, 2, 5.0).samples
        ref = run_sampler(ctx, loaded.model, pos, neg, {"samples": vae_encode(loaded.vae, picture(), ctx).cpu(),
                                                        "noise_mask": left_half()}, schedule, 2, 5.0).samples
    assert torch.equal(ours, ref)
    _, _, no_mask = InpaintModelConditioning().execute(InpaintModelConditioning.Inputs(
        positive=pos, negative=neg, vae=loaded.vae, pixels=picture(), mask=left_half(), noise_mask=False), ctx)
    assert "noise_mask" not in no_mask


@pytest.fixture(scope="module")
def inpaint_model(loaded):
    """The embedded model's bundle with a random 9-channel UNet of the same shape (an inpainting UNet)."""
    from diffusers import UNet2DConditionModel

    config = dict(loaded.model.network.config)
    config["in_channels"] = 9
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config).eval()
    return replace(loaded.model, network=unet, name="tiny-inpaint")


def test_inpainting_unet_gets_mask_and_masked_latents(inpaint_model, loaded, prompts, tmp_path):
    ctx = context(tmp_path)
    pos, neg = prompts
    assert inpaint_model.latent_channels == 4 and inpaint_model.inpaint_channels == 5
    p2, n2, lat = InpaintModelConditioning().execute(InpaintModelConditioning.Inputs(
        positive=pos, negative=neg, vae=loaded.vae, pixels=picture(), mask=left_half(), noise_mask=True), ctx)
    seen = []
    hook = inpaint_model.network.conv_in.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    try:
        with single_thread():
            out = run_sampler(ctx, inpaint_model, p2, n2, lat, schedules(inpaint_model)["euler (k-diffusion)"], 3,
                              5.0).samples
    finally:
        hook.remove()
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    x = seen[0]
    assert x.shape == (2, 9, 8, 8)  # [negative, positive] x [latents, mask, masked image latents]
    mask8 = latent_mask(left_half(), (1, 1, 8, 8)).round()
    assert torch.equal(x[:, 4:5], mask8.expand(2, -1, -1, -1))
    assert torch.equal(x[:, 5:], p2.concat_latent.expand(2, -1, -1, -1))
    with pytest.raises(NodeError, match="inpainting model"):
        run_sampler(ctx, inpaint_model, pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                    schedules(inpaint_model)["euler (k-diffusion)"], 3, 5.0)


def test_inpainting_folders_are_recognised(loaded, tmp_path):
    import json

    from nodes.families import for_folder

    for name, cross in (("sd1", 768), ("sd2", 1024)):
        folder = tmp_path / name
        (folder / "unet").mkdir(parents=True)
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline"}))
        (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                                 "in_channels": 9, "cross_attention_dim": cross}))
        assert for_folder(folder).name == name


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_noise_mask_on_other_families(family, tmp_path_factory, services, tmp_path):
    """The kept part stays the input latent for SDXL and for flow models (SD3: noised as (1 - s) x + s n)."""
    from tiny_families import shared_family

    from nodes.model_store import ModelStore

    fam = shared_family(family, tmp_path_factory)
    m = services.get(ModelStore).load(fam.folder, device=torch.device("cpu"), dtype=torch.float32,
                                      name=f"tiny-{family}")
    ctx = context(tmp_path)
    pos, neg = encode_text(m.clip, "a red circle"), encode_text(m.clip, "")
    samples = torch.randn(1, m.model.latent_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 8, 8)
    mask[:, 2:6, 2:6] = 1.0
    sigmas = comfy_names.denoised_sigmas("normal", 3, 1.0, m.model.scheduler_config)[0]
    rule = schedule_for_sigmas(m.model, sigmas, "euler")
    native = make_schedule(m.model, "flow_euler" if family == "sd3" else "euler", 3)
    for schedule in (rule, native):
        with single_thread():
            out = run_sampler(ctx, m.model, pos, neg, {"samples": samples, "noise_mask": mask}, schedule, 3,
                              4.0).samples
        keep = (mask == 0).expand(1, samples.shape[1], 8, 8)
        assert torch.equal(out[keep], samples[keep]) and (out[~keep] - samples[~keep]).abs().max() > 0.01


def comfy_feather(h, w, top, bottom, left, right, f):
    """ImagePadForOutpaint's feathering written out pixel by pixel, as ComfyUI loops over it."""
    t = torch.zeros(h, w)
    if f > 0 and f * 2 < h and f * 2 < w:
        for i in range(h):
            for j in range(w):
                d = min(i if top else h, h - i if bottom else h, j if left else w, w - j if right else w)
                if d < f:
                    t[i, j] = ((f - d) / f) ** 2
    return t


@pytest.mark.parametrize(("sides", "feathering"), [((8, 0, 16, 0), 5), ((0, 8, 0, 8), 12), ((8, 8, 8, 8), 0),
                                                    ((8, 0, 0, 0), 20)])
def test_image_pad_for_outpaint(tmp_path, sides, feathering):
    from nodes.inpainting import ImagePadForOutpaint

    top, bottom, left, right = sides
    image = torch.rand(2, 30, 36, 3)
    out, mask = ImagePadForOutpaint().execute(ImagePadForOutpaint.Inputs(
        image=image, left=left, top=top, right=right, bottom=bottom, feathering=feathering), context(tmp_path))
    assert out.shape == (2, 30 + top + bottom, 36 + left + right, 3) and mask.shape == (1, *out.shape[1:3])
    assert torch.equal(out[:, top:top + 30, left:left + 36], image)
    assert (out[:, :top] == 0.5).all() and (out[:, :, :left] == 0.5).all()
    inner = mask[0, top:top + 30, left:left + 36]
    assert torch.equal(inner, comfy_feather(30, 36, top, bottom, left, right, feathering))
    assert (mask[0, :top] == 1).all() and (mask[0, :, 36 + left:] == 1).all()


def test_outpaint_size_is_bounded(tmp_path, monkeypatch):
    from graph_runtime.limits import LIMITS
    from nodes.inpainting import ImagePadForOutpaint

    monkeypatch.setattr(LIMITS, "max_image_pixels", 1000)
    with pytest.raises(NodeError, match="left / top / right / bottom: the padded image of 48x40"):
        ImagePadForOutpaint().execute(ImagePadForOutpaint.Inputs(image=torch.rand(1, 32, 32, 3), left=8, top=8,
                                                                 right=8, bottom=0), context(tmp_path))
