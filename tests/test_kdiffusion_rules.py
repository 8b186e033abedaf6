"""The step rules of ComfyUI's KSampler list: exactness on a denoiser whose ODE is solved in closed form,
hand-worked steps, the flow forms, and agreement with diffusers' implementation where one exists."""

import math

import pytest
import torch
from tiny_sd import LATENT_SHAPE, shared_tiny_sd, single_thread

from schedulers import kdiffusion as K
from schedulers import sigmas as S
from schedulers.guidance import CFGDenoiser
from schedulers.model_sampling import Discrete, Flow
from schedulers.registry import SD15_SCHEDULER_CONFIG
from schedulers.sampling import make_noise, sample
from schedulers.schedule import build_schedule, schedule_from_sigmas

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

CONFIG = dict(SD15_SCHEDULER_CONFIG)


class GaussianData:
    """The exact denoiser for standard-normal data: ``E[x0 | x] = x / (1 + sigma^2)`` (discrete), or
    ``(1 - s) x / ((1 - s)^2 + s^2)`` for a flow model; its probability-flow ODE has the closed-form solution
    ``x(sigma) = x_T * n(sigma) / n(sigma_T)`` with ``n = sqrt(1 + sigma^2)`` (resp. ``sqrt((1-s)^2 + s^2)``)."""

    def __init__(self, sigmas, flow=False):
        self.sigmas = sigmas
        self.sampling = Flow(shift=3.0) if flow else Discrete(S.model_sigmas(CONFIG))
        self.flow = flow
        self.calls = 0

    def norm(self, s):
        return math.sqrt((1 - s) ** 2 + s**2) if self.flow else math.sqrt(1 + s * s)

    def at(self, x, s):
        self.calls += 1
        s = float(s)
        self.last = x * (1 - s) / ((1 - s) ** 2 + s**2) if self.flow else x / (1 + s * s)
        return self.last

    def uncond(self):
        """No guidance: the unconditional estimate is the estimate (CFG++ rules)."""
        return self.last

    def __call__(self, x, j):
        return self.at(x, self.sigmas[j])

    def on(self, sigmas):
        other = GaussianData(sigmas, self.flow)
        other.calls = self.calls
        return other


DETERMINISTIC = ["euler", "heun", "heunpp2", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "res_multistep",
                 "gradient_estimation", "deis", "uni_pc", "uni_pc_bh2", "exp_heun_2_x0", "dpm_fast"]
#: the stochastic rules' deterministic cores (eta = 0)
CORES = ["dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun",
         "dpmpp_3m_sde", "res_multistep_ancestral", "seeds_2", "seeds_3", "exp_heun_2_x0_sde", "sa_solver",
         "sa_solver_pece"]


def final_error(rule, steps, flow=False, **kw):
    if flow:
        sig = S.comfy_scheduler_sigmas("simple", steps, {"_class_name": "FlowMatchEulerDiscreteScheduler",
                                                          "shift": 3.0})
    else:
        sig = S.comfy_scheduler_sigmas("karras", steps, CONFIG)
    sig64 = sig.double()
    model = GaussianData(sig64, flow)
    x_t = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * model.norm(
        float(sig64[0]))
    out = K.RULES[rule](model, x_t, sig64, generator=torch.Generator().manual_seed(1), **kw)
    exact = x_t / model.norm(float(sig64[0])) * model.norm(0.0)
    return float((out - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize("rule", DETERMINISTIC + CORES)
def test_rules_solve_the_ode(rule):
    """Each rule (a stochastic one with eta = 0) nears the exact end point as steps grow; the higher-order
    ones beat Euler."""
    kw = {"eta": 0.0} if rule in CORES else {}
    coarse, fine = final_error(rule, 10, **kw), final_error(rule, 40, **kw)
    # the last step jumps to the posterior mean at sigma_min, 4.2e-4 from the ODE's end point: a floor
    assert fine < 0.05 and (fine < coarse or fine < 1e-3), (coarse, fine)
    if rule not in ("euler", "gradient_estimation", "heunpp2"):
        assert coarse < final_error("euler", 10), rule


@pytest.mark.parametrize("rule", ["euler", "res_multistep", "dpmpp_2m", "heun", "ipndm", "dpmpp_2m_sde",
                                  "dpmpp_2s_ancestral", "dpm_2_ancestral", "seeds_3", "exp_heun_2_x0"])
def test_rules_solve_the_flow_ode(rule):
    """On a flow model (sigma in [0, 1] from 1, the log-SNR forms included): the same ODE in sigma, the same
    convergence."""
    kw = {"eta": 0.0} if rule in CORES else {}
    coarse, fine = final_error(rule, 20, flow=True, **kw), final_error(rule, 80, flow=True, **kw)
    assert fine < 0.03 and fine < coarse, (coarse, fine)


def test_res_multistep_second_step_by_hand():
    """One RES 2M step worked out from the paper (Zhang et al. 2023, eq. of the multistep 2nd-order method):
    with t = -log sigma, h = t_{i+1} - t_i, c2 = (t_{i-1} - t_i) / h, phi1(z) = (e^z - 1) / z,
    phi2(z) = (phi1(z) - 1) / z at z = -h: x_{i+1} = e^{-h} x_i + h (b1 D_i + b2 D_{i-1}) with
    b2 = phi2 / c2, b1 = phi1 - b2."""
    sig = torch.tensor([10.0, 4.0, 1.5, 0.0], dtype=torch.float64)
    x0 = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    model = GaussianData(sig)
    out = K.res_multistep(model, x0.clone(), sig[:3])  # two steps: Euler, then RES 2M
    x1 = x0 + (x0 - x0 / 101) / 10 * (4 - 10)
    d0, d1 = x0 / 101, x1 / 17
    h = math.log(4) - math.log(1.5)
    c2 = (math.log(4) - math.log(10)) / h
    phi1 = (math.exp(-h) - 1) / -h
    phi2 = (phi1 - 1) / -h
    b2 = phi2 / c2
    expected = math.exp(-h) * x1 + h * ((phi1 - b2) * d1 + b2 * d0)
    torch.testing.assert_close(out, expected)


def test_ipndm_third_step_is_adams_bashforth():
    sig = torch.tensor([8.0, 5.0, 3.0, 2.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    model = GaussianData(sig)
    out = K.ipndm(model, x.clone(), sig[:4])
    xs, ds = [x], []
    for i, w in enumerate(([1.0], [1.5, -0.5], [23 / 12, -16 / 12, 5 / 12])):
        ds.insert(0, (xs[-1] - xs[-1] / (1 + float(sig[i]) ** 2)) / float(sig[i]))
        xs.append(xs[-1] + (float(sig[i + 1]) - float(sig[i])) * sum(c * d for c, d in zip(w, ds, strict=False)))
    torch.testing.assert_close(out, xs[-1])


def test_ddpm_step_is_the_posterior_mean_plus_noise():
    """DDPM in sigma space with alpha_bar = 1 / (1 + sigma^2): the variance-preserving latent steps to
    ``(x_vp - beta eps / sqrt(1 - abar)) / sqrt(alpha)`` plus sqrt of the posterior variance times noise."""
    sig = torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    model = GaussianData(sig)
    out = K.ddpm(model, x.clone(), sig[:2], generator=torch.Generator().manual_seed(4))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ab, ab_prev = 1 / 10, 1 / 2
    alpha = ab / ab_prev
    eps = (x - x / 10) / 3
    mean = (x / math.sqrt(10) - (1 - alpha) * eps / math.sqrt(1 - ab)) / math.sqrt(alpha)
    expected = (mean + math.sqrt((1 - alpha) * (1 - ab_prev) / (1 - ab)) * noise) * math.sqrt(2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("rule", sorted(K.STOCHASTIC_RULES))
@pytest.mark.parametrize("flow", [False, True])
def test_stochastic_rules_follow_the_generator(rule, flow):
    if flow:
        sig = S.comfy_scheduler_sigmas("simple", 8, {"_class_name": "FlowMatchEulerDiscreteScheduler"}).double()
    else:
        sig = S.comfy_scheduler_sigmas("karras", 8, CONFIG).double()
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(sig[0])
    a = K.RULES[rule](GaussianData(sig, flow), x, sig, generator=torch.Generator().manual_seed(1))
    b = K.RULES[rule](GaussianData(sig, flow), x, sig, generator=torch.Generator().manual_seed(1))
    c = K.RULES[rule](GaussianData(sig, flow), x, sig, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.isfinite(a).all()
    assert 0.2 < float(a.std()) < 5


def test_model_calls():
    assert K.model_calls("euler", 10) == 10 and K.model_calls("heun", 10) == 19
    assert K.model_calls("dpm_2", 10) == 19 and K.model_calls("heunpp2", 10) == 28
    assert K.model_calls("seeds_3", 10) == 28
    sig = S.comfy_scheduler_sigmas("karras", 10, CONFIG).double()
    for rule in K.RULES:
        model = GaussianData(sig)
        K.RULES[rule](model, torch.ones(1, 2, dtype=torch.float64), sig, generator=torch.Generator())
        assert model.calls <= K.model_calls(rule, 10), rule


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    with single_thread():
        yield shared_tiny_sd(tmp_path_factory)


@pytest.mark.parametrize("ours, theirs", [("dpm_2", "kdpm2")])
def test_rules_match_diffusers(sd, ours, theirs):
    """dpm_2 is diffusers' KDPM2 (log-midpoint second stage), over diffusers' own sigmas on the tiny SD UNet
    (the existing rules' comparisons are in test_schedulers_sampling)."""
    with single_thread():
        denoiser = CFGDenoiser(sd.pipe.unet, sd.positive, sd.negative, 6.0)
        pipeline_style = build_schedule(theirs, sd.config, 6)
        rule = schedule_from_sigmas(pipeline_style.sigmas, ours, sd.config, runner="kdiffusion")
        noise, _ = make_noise((1, *LATENT_SHAPE), 3)
        scale = pipeline_style.make_scheduler().init_noise_sigma
        dpm = theirs.startswith("dpmpp")
        a = sample(denoiser, noise * (1 if dpm else scale), pipeline_style, torch.Generator().manual_seed(5),
                   add_noise=False)
        start = noise * (1 + pipeline_style.sigmas[0] ** 2) ** 0.5 if dpm else noise * scale
        b = sample(denoiser, start, rule, torch.Generator().manual_seed(5), add_noise=False)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=5e-4)


def test_uni_pc_first_step_by_hand():
    """UniPC's first step (order 1): the DPM-Solver++ step, then the corrector with rho = 1/2 at the new point:
    x = (s1/s0) x0 - (e^-h - 1) D0 - B(h) (D1 - D0) / 2, B(h) = -h (bh1) or e^-h - 1 (bh2); two steps end at
    sigma 0.001 with a plain first-order step."""
    sig = torch.tensor([6.0, 2.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    for variant, b_h in (("bh1", lambda h: -h), ("bh2", lambda h: math.expm1(-h))):
        out = K.uni_pc(GaussianData(sig), x.clone(), sig, variant=variant)
        h = math.log(6.0) - math.log(2.0)
        d0 = x / 37
        base = (2.0 / 6.0) * x - math.expm1(-h) * d0
        x1 = base - b_h(h) * 0.5 * (base / 5 - d0)
        h2 = math.log(2.0) - math.log(0.001)
        expected = (0.001 / 2.0) * x1 - math.expm1(-h2) * (base / 5)
        torch.testing.assert_close(out, expected)


def test_er_sde_first_step_by_hand():
    """ER-SDE's first stage with v = sigma / alpha and the noise scale f(v) = v (e^(v^0.3) + 10):
    x' = (alpha_t / alpha_s) r x + alpha_t (1 - r) D + alpha_t sqrt(v_t^2 - v_s^2 r^2) z, r = f(v_t) / f(v_s)."""
    sig = torch.tensor([5.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[2.0, -0.5]], dtype=torch.float64)
    out = K.er_sde(GaussianData(sig), x.clone(), sig[:2], generator=torch.Generator().manual_seed(3))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def f(v):
        return v * (math.exp(v**0.3) + 10)

    r = f(1.0) / f(5.0)
    expected = r * x + (1 - r) * x / 26 + math.sqrt(1.0 - 25.0 * r * r) * z
    torch.testing.assert_close(out, expected)


class WithUncond(GaussianData):
    """GaussianData whose unconditional estimate is ``uncond_scale`` times the guided one."""

    def __init__(self, sigmas, flow=False, uncond_scale=1.0):
        super().__init__(sigmas, flow)
        self.uncond_scale = uncond_scale

    def uncond(self):
        return self.last * self.uncond_scale

    def on(self, sigmas):
        return WithUncond(sigmas, self.flow, self.uncond_scale)


CFG_PP = {"euler_cfg_pp": "euler", "euler_ancestral_cfg_pp": "euler_ancestral",
          "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral", "dpmpp_2m_cfg_pp": "dpmpp_2m",
          "res_multistep_cfg_pp": "res_multistep", "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
          "gradient_estimation_cfg_pp": "gradient_estimation"}


@pytest.mark.parametrize("rule", sorted(CFG_PP))
def test_cfg_pp_rules_reduce_to_their_base_rule_without_guidance(rule):
    """Where the unconditional estimate equals the guided one (no guidance), CFG++ is the plain rule."""
    assert rule in K.UNCOND_RULES
    sig = S.comfy_scheduler_sigmas("karras", 8, CONFIG).double()
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(sig[0])
    a = K.RULES[rule](WithUncond(sig), x, sig, generator=torch.Generator().manual_seed(1))
    b = K.RULES[CFG_PP[rule]](GaussianData(sig), x, sig, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_euler_cfg_pp_step_by_hand():
    """CFG++ Euler: x' = D + sigma' (x - D_uncond) / sigma -- the guided estimate, renoised with the
    unconditional noise."""
    sig = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    out = K.euler_cfg_pp(WithUncond(sig, uncond_scale=0.5), x.clone(), sig[:2])
    d = x / 17
    torch.testing.assert_close(out, d + 1.0 * (x - 0.5 * d) / 4.0)


def test_uncond_cfg_is_cfg_and_keeps_the_unconditional_prediction():
    from schedulers.cfg_pp import UncondCFG

    def net(x, t, return_dict=False, encoder_hidden_states=None):
        return (x * 0.3 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1),)

    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    pos, neg = torch.full((1, 5, 8), 2.0), torch.full((1, 5, 8), -1.0)
    guided = UncondCFG(net, {"encoder_hidden_states": pos}, {"encoder_hidden_states": neg}, 7.0)
    out = guided(x, torch.tensor(10.0))
    plain = CFGDenoiser(net, pos, neg, 7.0)(x, torch.tensor(10.0))
    assert torch.equal(out, plain)
    torch.testing.assert_close(guided.uncond, x * 0.3 - 1.0)
    # at cfg 1 the unconditional pass still runs (CFG++ needs it)
    one = UncondCFG(net, {"encoder_hidden_states": pos}, {"encoder_hidden_states": neg}, 1.0)
    one(x, torch.tensor(10.0))
    torch.testing.assert_close(one.uncond, x * 0.3 - 1.0)


@pytest.mark.parametrize("nfe", [30, 31, 32])
def test_dpm_fast_spends_the_steps_on_third_order_stages(nfe):
    """dpm_fast uses the schedule's end points and its number of steps as the network-call budget (all three
    remainders of the budget over 3), and ends at sigma_min on the ODE solution (here within 0.1 %)."""
    sig = S.comfy_scheduler_sigmas("karras", nfe, CONFIG).double()
    model = GaussianData(sig)
    x_t = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * model.norm(
        float(sig[0]))
    seen = []

    class Progress:
        def begin(self, i):
            pass

        def end(self, i, x, denoised):
            seen.append(i)

    out = K.dpm_fast(model, x_t, sig, hooks=Progress())
    assert model.calls == nfe and seen == list(range(nfe))
    exact = x_t / model.norm(float(sig[0])) * model.norm(float(sig[-2]))
    assert float((out - exact).abs().max() / exact.abs().max()) < 1e-3


def test_sa_solver_first_predictor_is_the_exponential_euler_step():
    """With no noise (tau = 0) SA-Solver's first predictor integrates e^(lam - lam_t) against the constant
    basis: alpha_t (1 - e^-h), i.e. x' = (s'/s) x - (e^-h - 1) D, the DPM-Solver++ first-order step."""
    sig = torch.tensor([6.0, 2.0], dtype=torch.float64)
    x = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    out = K.sa_solver(GaussianData(sig), x.clone(), sig, eta=0.0)
    h = math.log(6.0) - math.log(2.0)
    torch.testing.assert_close(out, (2.0 / 6.0) * x - math.expm1(-h) * (x / 37))
    # the coefficients of any order integrate the weight exactly: they sum to alpha_t (1 - e^-(1 + tau^2) h)
    b = K._sa_coefficients(2.0, [-math.log(8.0), -math.log(6.0), -math.log(4.0)], -math.log(4.0),
                           -math.log(2.0), 0.5)
    assert sum(b) == pytest.approx(-math.expm1(-1.25 * math.log(2.0)))


def test_dpm_adaptive_controls_its_error():
    """dpm_adaptive ends at sigma_min near the ODE solution, closer with tighter tolerances (at more calls),
    reports every step of the schedule once, and refuses to run past its call cap."""
    sig = S.comfy_scheduler_sigmas("karras", 10, CONFIG).double()
    x_t = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.sqrt(
        1 + float(sig[0]) ** 2)
    exact = x_t / math.sqrt(1 + float(sig[0]) ** 2) * math.sqrt(1 + float(sig[-2]) ** 2)
    seen = []

    class Progress:
        def begin(self, i):
            pass

        def end(self, i, x, denoised):
            seen.append(i)

    loose, tight = GaussianData(sig), GaussianData(sig)
    a = K.dpm_adaptive(loose, x_t, sig, hooks=Progress())
    b = K.dpm_adaptive(tight, x_t, sig, rtol=1e-4, atol=1e-6)
    err = [float((o - exact).abs().max() / exact.abs().max()) for o in (a, b)]
    assert err[0] < 0.05 and err[1] < 1e-3 and tight.calls > loose.calls, (err, loose.calls, tight.calls)
    assert seen == list(range(10)) and loose.calls % 3 == 0
    assert K.model_calls("dpm_adaptive", 10) == K.ADAPTIVE_MAX_CALLS
    with pytest.raises(ValueError, match="more than 600 network calls"):
        K.dpm_adaptive(GaussianData(sig), x_t, sig, rtol=1e-12, atol=1e-14)
