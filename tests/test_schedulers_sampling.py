import pytest
import torch
from tiny_sd import LATENT_SHAPE, shared_tiny_sd, single_thread

from schedulers import kdiffusion
from schedulers import sigmas as S
from schedulers.guidance import CFGDenoiser
from schedulers.sampling import SamplingInterrupted, make_noise, sample
from schedulers.schedule import build_schedule, schedule_from_sigmas

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

SHAPE = (1, *LATENT_SHAPE)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    with single_thread():
        yield shared_tiny_sd(tmp_path_factory)


@pytest.fixture
def denoiser(sd):
    return CFGDenoiser(sd.pipe.unet, sd.positive, sd.negative, 7.5)


def gen(seed=5):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "heun", "lms"])
def test_kdiffusion_rules_match_diffusers_on_its_own_sigmas(sd, denoiser, name):
    """Sigma-space schedulers: the rule over the scheduler's SIGMAS gives the scheduler's result. The UNet
    timestep is recovered from sigma by log-sigma interpolation, so it may differ from the scheduler's in the
    last float bits; LMS integrates its coefficients separately."""
    pipeline_style = build_schedule(name, sd.config, 8)
    rule = schedule_from_sigmas(pipeline_style.sigmas, name, sd.config, runner="kdiffusion")
    assert rule.runner == "kdiffusion"
    torch.testing.assert_close(rule.timesteps, pipeline_style.timesteps[:: 2 if name == "heun" else 1])
    noise, _ = make_noise(SHAPE, 3)
    start = noise * pipeline_style.make_scheduler().init_noise_sigma
    a = sample(denoiser, start, pipeline_style, gen(), add_noise=False)
    b = sample(denoiser, start, rule, gen(), add_noise=False)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_2m_sde"])
def test_dpmpp_rules_match_diffusers_dpm_solver(sd, denoiser, name):
    """DPM-Solver++ in diffusers runs on unscaled (variance-preserving) latents; the k-diffusion start equal to
    its initial latents is x * sqrt(1 + sigma_0^2). The SDE variant draws the same Gaussian noise stream."""
    pipeline_style = build_schedule(name, sd.config, 8)
    rule = schedule_from_sigmas(pipeline_style.sigmas, name, sd.config)
    assert rule.runner == "kdiffusion"
    noise, _ = make_noise(SHAPE, 3)
    a = sample(denoiser, noise, pipeline_style, gen(), add_noise=False)
    b = sample(denoiser, noise * (1 + pipeline_style.sigmas[0] ** 2) ** 0.5, rule, gen(), add_noise=False)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("rule", list(kdiffusion.RULES))
def test_rules_run_custom_sigmas(sd, denoiser, rule):
    if rule in kdiffusion.UNCOND_RULES:  # CFG++: a guided network that keeps the unconditional prediction
        from schedulers.cfg_pp import UncondCFG

        denoiser = UncondCFG(sd.pipe.unet, {"encoder_hidden_states": sd.positive},
                             {"encoder_hidden_states": sd.negative}, 7.5)
    sig = S.comfy_scheduler_sigmas("karras", 6, sd.config)
    schedule = schedule_from_sigmas(sig, rule, sd.config, runner="kdiffusion")
    seen = []
    noise, generator = make_noise(SHAPE, 11)
    out = sample(denoiser, noise, schedule, generator, callback=lambda i, n, x, x0: seen.append((i, n, x0)))
    assert torch.isfinite(out).all()
    assert [(i, n) for i, n, _ in seen] == [(i, 6) for i in range(6)]
    assert all(torch.isfinite(x0).all() for _, _, x0 in seen)
    # one call a step, two for the two-stage rules (one on the last step to 0); heunpp2 up to three;
    # dpm_adaptive three a try, as many tries as its error control takes, within its cap
    if rule == "dpm_adaptive":
        assert denoiser.calls % 3 == 0 and 0 < denoiser.calls <= kdiffusion.model_calls(rule, 6)
    else:
        assert denoiser.calls == (15 if rule == "heunpp2" else kdiffusion.model_calls(rule, 6))
    # same seed, same result; the stochastic rules follow the generator
    noise, generator = make_noise(SHAPE, 11)
    assert torch.equal(out, sample(denoiser, noise, schedule, generator))
    other = sample(denoiser, make_noise(SHAPE, 11)[0], schedule, gen(99))
    assert torch.equal(out, other) != (rule in kdiffusion.STOCHASTIC_RULES)


def test_split_sigmas_continue_where_the_first_part_stopped(sd, denoiser):
    sig = S.comfy_scheduler_sigmas("normal", 6, sd.config)
    high, low = S.split(sig, 2)
    noise, _ = make_noise(SHAPE, 4)
    full = sample(denoiser, noise, schedule_from_sigmas(sig, "euler", sd.config, runner="kdiffusion"))
    part = sample(denoiser, noise, schedule_from_sigmas(high, "euler", sd.config, runner="kdiffusion"))
    rest = schedule_from_sigmas(low, "euler", sd.config, runner="kdiffusion")
    assert torch.equal(sample(denoiser, part, rest, add_noise=False), full)


def test_img2img_with_a_kdiffusion_rule_starts_from_noised_init(sd, denoiser):
    sig = S.comfy_scheduler_sigmas("karras", 8, sd.config)[3:]
    schedule = schedule_from_sigmas(sig, "euler", sd.config, runner="kdiffusion")
    noise, _ = make_noise(SHAPE, 4)
    init = torch.full(SHAPE, 0.5)
    checks = []
    a = sample(denoiser, noise, schedule, init_latents=init, should_stop=lambda: checks.append(1) and False)
    assert len(checks) == schedule.steps == 5  # polled once before each step
    # the same start given with add_noise=False gives the same run
    assert torch.equal(a, sample(denoiser, init + noise * sig[0], schedule, add_noise=False))


@pytest.mark.parametrize("name, calls_per_step", [("euler", 1), ("heun", 2), ("dpmpp_2m", 1)])
def test_stop_check_raises_between_steps(sd, denoiser, name, calls_per_step):
    schedule = build_schedule(name, sd.config, 6)
    done = []
    noise, generator = make_noise(SHAPE, 1)
    with pytest.raises(SamplingInterrupted) as err:
        sample(
            denoiser,
            noise,
            schedule,
            generator,
            callback=lambda i, n, x, x0: done.append(x),
            should_stop=lambda: len(done) == 2,
        )
    assert err.value.step == 2 and err.value.total == 6
    assert denoiser.calls == 2 * calls_per_step  # nothing ran after the stop
    assert err.value.latents is done[-1]
    assert "before step 3 of 6" in str(err.value)


@pytest.mark.parametrize(
    "name, calls", [("pndm", 7), ("heun", 11), ("kdpm2", 11), ("dpmpp_sde", 11), ("ddim", 6)]
)
def test_progress_is_reported_per_step(sd, denoiser, name, calls):
    schedule = build_schedule(name, sd.config, 6)
    seen = []
    noise, generator = make_noise(SHAPE, 1)
    out = sample(
        denoiser, noise, schedule, generator, callback=lambda i, n, x, x0: seen.append((i, n, x, x0))
    )
    assert [(i, n) for i, n, _, _ in seen] == [(i, 6) for i in range(6)]
    assert denoiser.calls == calls
    assert seen[-1][2] is out
    for _, _, _, preview in seen:
        assert preview is not None and preview.shape == SHAPE and torch.isfinite(preview).all()


def test_denoise_without_init_latents_noises_zeros(sd, denoiser):
    schedule = build_schedule("euler", sd.config, 10, denoise=0.5)
    noise, _ = make_noise(SHAPE, 2)
    a = sample(denoiser, noise, schedule)
    b = sample(denoiser, noise, schedule, init_latents=torch.zeros(SHAPE))
    assert torch.equal(a, b) and schedule.steps == 5


def test_bad_calls_are_refused(sd, denoiser):
    noise, _ = make_noise(SHAPE, 2)
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        sample(denoiser, noise, build_schedule("euler_ancestral", sd.config, 4))
    with pytest.raises(ValueError, match="init_latents needs add_noise=True"):
        sample(denoiser, noise, build_schedule("euler", sd.config, 4), add_noise=False, init_latents=noise)
    with pytest.raises(ValueError, match="differ in shape"):
        sample(denoiser, noise, build_schedule("euler", sd.config, 4), init_latents=noise[:, :2])
    with pytest.raises(ValueError, match="needs negative"):
        CFGDenoiser(sd.pipe.unet, sd.positive, None, 5.0)


def test_make_noise_is_the_pipelines_noise():
    from diffusers.utils.torch_utils import randn_tensor

    noise, generator = make_noise(SHAPE, 77)
    assert torch.equal(noise, randn_tensor(SHAPE, generator=torch.Generator("cpu").manual_seed(77)))
    assert generator.initial_seed() == 77
    # the generator continues its stream for the sampler's own noise
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=_after(77, SHAPE)))


def _after(seed, shape):
    g = torch.Generator().manual_seed(seed)
    torch.randn(shape, generator=g)
    return g


def test_sigma_to_t_inverts_the_train_sigmas(sd):
    train = S.model_sigmas(sd.config)
    t = kdiffusion.sigma_to_t(train[[0, 1, 500, 998, 999]], train)
    torch.testing.assert_close(t, torch.tensor([0.0, 1.0, 500.0, 998.0, 999.0]))
    mid = (train[10].log() + train[11].log()) / 2
    assert kdiffusion.sigma_to_t(mid.exp().reshape(1), train).item() == pytest.approx(10.5, abs=1e-3)
    assert kdiffusion.sigma_to_t(torch.tensor([100.0, 1e-5]), train).tolist() == [999.0, 0.0]
