"""Our loop against diffusers' own pipelines, scheduler by scheduler, on a tiny random SD model.

Every comparison here is exact (max abs difference == 0): the loop performs the same tensor operations in
the same order as StableDiffusionPipeline / StableDiffusionImg2ImgPipeline, so no float tolerance is needed.
"""

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from diffusers.utils.torch_utils import randn_tensor
from tiny_sd import IMAGE_SIZE, LATENT_SHAPE, shared_tiny_sd, single_thread

from schedulers import registry
from schedulers.guidance import CFGDenoiser
from schedulers.sampling import make_noise, sample
from schedulers.schedule import build_schedule, schedule_from_sigmas
from schedulers.sigmas import karras, model_sigmas

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

SEED, STEPS, CFG = 1234, 5, 7.5
SHAPE = (1, *LATENT_SHAPE)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    with single_thread():
        yield shared_tiny_sd(tmp_path_factory)


def swap_scheduler(pipe, config, name, **overrides):
    """The guide's swap: ``Class.from_config(pipe.scheduler.config)`` (plus the entry's overrides)."""
    entry = registry.get(name)
    ov = {**entry.overrides, **overrides}
    if entry.seed_config_key:
        ov[entry.seed_config_key] = SEED  # DPM++ SDE seeds its Brownian tree from the config
    with registry.quiet_diffusers():
        pipe.scheduler = entry.cls.from_config(config, **ov)


def run_pipeline(sd, name, steps=STEPS, cfg=CFG, overrides=None, **kwargs):
    swap_scheduler(sd.pipe, sd.config, name, **(overrides or {}))
    kwargs.setdefault("output_type", "latent")
    return sd.pipe(
        prompt_embeds=sd.positive,
        negative_prompt_embeds=sd.negative,
        num_inference_steps=steps,
        guidance_scale=cfg,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        generator=torch.Generator("cpu").manual_seed(SEED),
        **kwargs,
    ).images


def run_ours(sd, schedule, cfg=CFG):
    noise, generator = make_noise(SHAPE, SEED)
    return sample(CFGDenoiser(sd.pipe.unet, sd.positive, sd.negative, cfg), noise, schedule, generator)


def assert_same(ours, ref):
    assert torch.isfinite(ref).all() and ref.abs().max() > 0.1
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert (ours - ref).abs().max().item() == 0


@pytest.mark.parametrize("name", registry.fitting_names(registry.SD15_SCHEDULER_CONFIG))
def test_txt2img_matches_pipeline(sd, name):
    ref = run_pipeline(sd, name)
    assert_same(run_ours(sd, build_schedule(name, sd.config, STEPS)), ref)


@pytest.mark.parametrize(
    "name, spacing, timestep_spacing",
    [
        ("euler", "karras", None),
        ("dpmpp_2m", "karras", None),
        ("dpmpp_2m_sde", "exponential", None),
        ("heun", "beta", None),
        ("dpmpp_sde", "karras", None),
        ("lms", "karras", None),
        ("euler_ancestral", "default", "trailing"),
        ("ddim", "default", "trailing"),
        ("unipc", "default", "linspace"),
    ],
)
def test_spacings_match_pipeline(sd, name, spacing, timestep_spacing):
    ov = {}
    if spacing != "default":
        ov[registry.SIGMA_FLAGS[spacing]] = True
    if timestep_spacing:
        ov["timestep_spacing"] = timestep_spacing
    ref = run_pipeline(sd, name, overrides=ov)
    schedule = build_schedule(
        name, sd.config, STEPS, sigma_spacing=spacing, timestep_spacing=timestep_spacing
    )
    assert_same(run_ours(sd, schedule), ref)


def test_ddim_eta_matches_pipeline(sd):
    ref = run_pipeline(sd, "ddim", eta=0.7)
    schedule = build_schedule("ddim", sd.config, STEPS, eta=0.7)
    assert schedule.stochastic
    assert_same(run_ours(sd, schedule), ref)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "heun"])
def test_cfg_one_matches_pipeline_with_one_unet_call_per_evaluation(sd, name):
    ref = run_pipeline(sd, name, cfg=1.0)
    batches = []
    unet = sd.pipe.unet

    def counting_unet(x, *args, **kwargs):
        batches.append(x.shape[0])
        return unet(x, *args, **kwargs)

    schedule = build_schedule(name, sd.config, STEPS)
    noise, generator = make_noise(SHAPE, SEED)
    out = sample(CFGDenoiser(counting_unet, sd.positive, None, 1.0), noise, schedule, generator)
    assert_same(out, ref)
    assert batches == [1] * len(schedule.timesteps)
    assert len(batches) == (2 * STEPS - 1 if name == "heun" else STEPS)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_sde"])
def test_batch_with_a_generator_per_image_matches_pipeline(sd, name):
    swap_scheduler(sd.pipe, sd.config, name)
    if registry.get(name).seed_config_key:  # the pipeline's scheduler gets one Brownian seed per image
        sd.pipe.scheduler.noise_sampler_seed = [SEED, SEED + 1]
    generators = [torch.Generator("cpu").manual_seed(s) for s in (SEED, SEED + 1)]
    ref = sd.pipe(
        prompt_embeds=sd.positive,
        negative_prompt_embeds=sd.negative,
        num_images_per_prompt=2,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        generator=generators,
        output_type="latent",
    ).images
    generators = [torch.Generator("cpu").manual_seed(s) for s in (SEED, SEED + 1)]
    noise = randn_tensor((2, *LATENT_SHAPE), generator=generators)
    denoiser = CFGDenoiser(sd.pipe.unet, sd.positive.repeat(2, 1, 1), sd.negative.repeat(2, 1, 1), CFG)
    assert_same(sample(denoiser, noise, build_schedule(name, sd.config, STEPS), generators), ref)
    assert not torch.equal(ref[0], ref[1])


def test_decoded_image_matches_pipeline(sd):
    ref = run_pipeline(sd, "dpmpp_2m", output_type="pt")
    latents = run_ours(sd, build_schedule("dpmpp_2m", sd.config, STEPS))
    with torch.no_grad():
        image = sd.pipe.vae.decode(latents / sd.pipe.vae.config.scaling_factor, return_dict=False)[0]
    image = sd.pipe.image_processor.postprocess(image, output_type="pt", do_denormalize=[True])
    assert image.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (image - ref).abs().max().item() == 0


def test_custom_sigmas_match_pipeline(sd):
    """Custom SIGMAS through a class that takes them (Euler): same as the pipeline's ``sigmas=`` argument."""
    sig = karras(STEPS, 0.0292, 14.6146)
    ref = run_pipeline(sd, "euler", steps=None, sigmas=sig.tolist())
    schedule = schedule_from_sigmas(sig, "euler", sd.config)
    assert schedule.runner == "diffusers" and schedule.steps == STEPS
    assert_same(run_ours(sd, schedule), ref)


@pytest.fixture(scope="module")
def img2img(sd):
    return StableDiffusionImg2ImgPipeline(**sd.pipe.components, requires_safety_checker=False)


@pytest.mark.parametrize("name", registry.fitting_names(registry.SD15_SCHEDULER_CONFIG))
def test_img2img_matches_pipeline(sd, img2img, name):
    """denoise < 1 with init latents equals StableDiffusionImg2ImgPipeline at strength = denoise (the latents
    go in as a 4-channel image, which the pipeline uses without the VAE)."""
    steps, denoise = 6, 0.6
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    swap_scheduler(img2img, sd.config, name)
    ref = img2img(
        prompt_embeds=sd.positive,
        negative_prompt_embeds=sd.negative,
        image=init,
        strength=denoise,
        num_inference_steps=steps,
        guidance_scale=CFG,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="latent",
    ).images
    schedule = build_schedule(name, sd.config, steps, denoise=denoise)
    assert schedule.steps == int(steps * denoise)
    noise, generator = make_noise(SHAPE, SEED)
    denoiser = CFGDenoiser(sd.pipe.unet, sd.positive, sd.negative, CFG)
    assert_same(sample(denoiser, noise, schedule, generator, init_latents=init), ref)


def test_model_sigmas_match_the_pipelines_scheduler(sd):
    with registry.quiet_diffusers():
        euler = registry.get("euler").build(sd.config)
    ac = euler.alphas_cumprod
    assert torch.equal(model_sigmas(sd.config), ((1 - ac) / ac) ** 0.5)
