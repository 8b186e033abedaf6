"""ComfyUI's sigma arithmetic: the schedulers added for its KSampler list (linear_quadratic, kl_optimal), the
Align Your Steps and SD Turbo schedulers, and the sigma edit nodes, each worked out here from its formula."""

import math

import numpy as np
import pytest
import torch

from nodes.sigma_nodes import ManualSigmas, SetFirstSigma, SplitSigmasDenoise
from schedulers import sigmas as S
from schedulers.registry import SD15_SCHEDULER_CONFIG

CONFIG = dict(SD15_SCHEDULER_CONFIG)
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def run(node, **inputs):
    return node().execute(node.Inputs(**inputs), None)


def test_kl_optimal_is_tan_of_a_linear_atan_ramp():
    train = S.model_sigmas(CONFIG)
    lo, hi = float(train[0]), float(train[-1])
    got = S.comfy_scheduler_sigmas("kl_optimal", 5, CONFIG)
    expected = [math.tan((i / 4) * math.atan(lo) + (1 - i / 4) * math.atan(hi)) for i in range(5)] + [0.0]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert got[0].item() == pytest.approx(hi, rel=1e-5) and got[-2].item() == pytest.approx(lo, rel=1e-5)


@pytest.mark.parametrize("config, sigma_max", [(CONFIG, None), (FLOW, 1.0)])
def test_linear_quadratic_follows_mochis_schedule(config, sigma_max):
    """Mochi's schedule for 6 steps: noise fractions 0, 0.025/3, 0.05/3 (linear), then a quadratic through
    0.025 at step 3 that reaches 1 after step 6; sigma = (1 - fraction) * sigma_max."""
    sigma_max = sigma_max or float(S.model_sigmas(config)[-1])
    got = S.comfy_scheduler_sigmas("linear_quadratic", 6, config)
    n, lin, thr = 6, 3, 0.025
    # the quadratic q(i) = a i^2 + b i + c with q(lin) = thr, q'(lin) = thr / lin (continuing the line), q(n) = 1
    a = (lin - thr * n) / (lin * (n - lin) ** 2)
    b = thr / lin - 2 * (lin - thr * n) / (n - lin) ** 2
    c = a * lin**2
    frac = [i * thr / lin for i in range(lin)] + [a * i * i + b * i + c for i in range(lin, n)] + [1.0]
    torch.testing.assert_close(got, torch.tensor([(1 - f) * sigma_max for f in frac]), rtol=1e-6, atol=1e-6)
    assert a * n * n + b * n + c == pytest.approx(1.0)  # the quadratic ends at full denoise
    assert got[-1] == 0 and got[0].item() == pytest.approx(sigma_max)
    one = S.linear_quadratic(1, config)
    assert one.tolist() == pytest.approx([sigma_max, 0.0])


def test_align_your_steps_tables_and_interpolation():
    # 10 steps: the published table itself, ending in 0
    sd1 = S.align_your_steps("SD1", 10)
    assert len(sd1) == 11 and sd1[-1] == 0
    torch.testing.assert_close(sd1[:-1], torch.tensor(S.AYS_NOISE_LEVELS["SD1"][:-1]))
    # other step counts: log sigma interpolated linearly over an even grid from the first to the last level
    table = S.AYS_NOISE_LEVELS["SDXL"]
    got = S.align_your_steps("SDXL", 4)
    expected = []
    for k in range(5):
        pos = k / 4 * 10  # where step k falls on the table's 10 intervals
        lo = int(math.floor(pos))
        hi = min(lo + 1, 10)
        w = pos - lo
        expected.append(math.exp((1 - w) * math.log(table[lo]) + w * math.log(table[hi])))
    expected[-1] = 0.0
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # denoise: the last round(steps * denoise) steps of the full-length schedule
    full = S.align_your_steps("SVD", 20)
    part = S.align_your_steps("SVD", 20, denoise=0.5)
    assert len(part) == 11 and torch.equal(part, full[-11:])
    assert S.align_your_steps("SD1", 10, denoise=0.0).numel() == 0
    with pytest.raises(ValueError, match="model_type"):
        S.align_your_steps("SD3", 10)


def test_sd_turbo_takes_train_timesteps_999_899_and_so_on():
    train = S.model_sigmas(CONFIG)
    got = S.sd_turbo(4, CONFIG)
    torch.testing.assert_close(got, torch.tensor([train[t].item() for t in (999, 899, 799, 699)] + [0.0]))
    # denoise 0.5 starts five timesteps in; steps past the tenth are dropped
    half = S.sd_turbo(8, CONFIG, denoise=0.5)
    torch.testing.assert_close(half, torch.tensor([train[t].item() for t in (499, 399, 299, 199, 99)] + [0.0]))
    # a flow model: the shifted t / 1000
    flow = S.sd_turbo(2, FLOW)
    shifted = [3 * s / (1 + 2 * s) for s in (0.999, 0.899)]
    torch.testing.assert_close(flow, torch.tensor([*shifted, 0.0]))


def test_split_sigmas_denoise_keeps_the_last_steps_low():
    s = S.comfy_scheduler_sigmas("karras", 10, CONFIG)
    high, low = run(SplitSigmasDenoise, sigmas=s, denoise=0.35)  # round(3.5) = 4 low steps
    assert torch.equal(high, s[:7]) and torch.equal(low, s[6:])
    high, low = run(SplitSigmasDenoise, sigmas=s, denoise=1.0)
    assert torch.equal(high, s[:1]) and torch.equal(low, s)
    high, low = run(SplitSigmasDenoise, sigmas=s, denoise=0.0)
    assert torch.equal(high, s) and torch.equal(low, s[-1:])


def test_set_first_sigma_and_manual_sigmas():
    from graph_runtime import NodeError

    s = S.comfy_scheduler_sigmas("normal", 4, CONFIG)
    (out,) = run(SetFirstSigma, sigmas=s, sigma=136.0)
    assert out[0].item() == 136.0 and torch.equal(out[1:], s[1:]) and s[0].item() != 136.0
    with pytest.raises(NodeError, match="sigma: .* below"):
        run(SetFirstSigma, sigmas=s, sigma=0.001)
    (manual,) = run(ManualSigmas, sigmas="1, 0.5")
    assert manual.tolist() == [1.0, 0.5]
    (manual,) = run(ManualSigmas, sigmas="[14.6, 7.0, 1e-1, 0]")
    assert np.allclose(manual.tolist(), [14.6, 7.0, 0.1, 0.0])
    with pytest.raises(NodeError, match="item 2"):
        run(ManualSigmas, sigmas="1, x")


def log_interp(train, t):
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * math.log(train[lo]) + w * math.log(train[hi]))


def test_sgm_uniform_and_basic_scheduler_denoise():
    """sgm_uniform: steps + 1 timesteps evenly from 999 to 0, the last left out, each log-sigma interpolated.
    BasicScheduler's denoise: the last ``steps`` levels of an ``int(steps / denoise)``-step schedule."""
    from nodes.custom_sampling import BasicScheduler

    train = S.model_sigmas(CONFIG).tolist()
    sgm = S.comfy_scheduler_sigmas("sgm_uniform", 4, CONFIG)
    expected = [log_interp(train, 999 * (1 - k / 4)) for k in range(4)] + [0.0]
    torch.testing.assert_close(sgm, torch.tensor(expected), rtol=1e-5, atol=1e-6)

    from nodes.types import ModelBundle

    model = ModelBundle(network=None, family=None, scheduler_config=CONFIG, device=torch.device("cpu"),
                        dtype=torch.float32, name="config only", source="")
    (half,) = run(BasicScheduler, model=model, scheduler="karras", steps=4, denoise=0.5)
    assert torch.equal(half, S.comfy_scheduler_sigmas("karras", 8, CONFIG)[-5:])
    (third,) = run(BasicScheduler, model=model, scheduler="simple", steps=3, denoise=0.35)  # int(3 / 0.35) = 8
    assert torch.equal(third, S.comfy_scheduler_sigmas("simple", 8, CONFIG)[-4:])
    (none,) = run(BasicScheduler, model=model, scheduler="normal", steps=3, denoise=0.0)
    assert none.numel() == 0
