import math

import numpy as np
import pytest
import torch
from scipy import stats

from schedulers import sigmas as S
from schedulers.registry import SD15_SCHEDULER_CONFIG

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)


@pytest.fixture(scope="module")
def train():
    return S.model_sigmas(SD15_SCHEDULER_CONFIG)


def _assert_sigmas_form(sig, steps):
    assert sig.dtype == torch.float32 and sig.ndim == 1
    if steps is not None:
        assert len(sig) == steps + 1
    assert sig[-1] == 0
    assert bool((sig[1:] <= sig[:-1]).all())
    S.validate(sig)


def test_model_sigmas_are_sd15s(train):
    assert len(train) == 1000
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ac = np.cumprod(1 - betas)
    np.testing.assert_allclose(train.numpy(), ((1 - ac) / ac) ** 0.5, rtol=1e-4)
    assert train[0] == pytest.approx(0.0292, abs=1e-4) and train[-1] == pytest.approx(14.6146, abs=1e-3)


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_karras_follows_the_formula(steps):
    sig = S.karras(steps, 0.03, 14.6, rho=7.0)
    _assert_sigmas_form(sig, steps)
    for i in range(steps):
        ramp = i / (steps - 1) if steps > 1 else 0.0
        expect = (14.6 ** (1 / 7) + ramp * (0.03 ** (1 / 7) - 14.6 ** (1 / 7))) ** 7
        assert sig[i].item() == pytest.approx(expect, rel=1e-6)
    if steps > 1:
        assert sig[-2].item() == pytest.approx(0.03, rel=1e-6)


def test_exponential_follows_the_formula():
    sig = S.exponential(10, 0.03, 14.6)
    _assert_sigmas_form(sig, 10)
    expect = [math.exp(math.log(14.6) + i / 9 * (math.log(0.03) - math.log(14.6))) for i in range(10)]
    np.testing.assert_allclose(sig[:-1].numpy(), expect, rtol=1e-6)


def test_beta_follows_comfyuis_formula(train):
    sig = S.beta(10, train)
    _assert_sigmas_form(sig, 10)
    q = 1 - np.linspace(0, 1, 10, endpoint=False)
    t = np.rint(stats.beta.ppf(q, 0.6, 0.6) * 999).astype(int)
    np.testing.assert_array_equal(sig[:-1].numpy(), train[t].numpy())
    assert sig[0] == train[-1]  # starts from the largest train sigma


def test_beta_drops_repeated_timesteps(train):
    sig = S.beta(900, train)
    assert len(sig) < 901 and sig[-1] == 0
    assert bool((sig[1:-1] < sig[:-2]).all())


@pytest.mark.parametrize("name", S.COMFY_SCHEDULERS)
def test_comfy_schedulers_are_valid_sigmas(name, train):
    sig = S.comfy_scheduler_sigmas(name, 12, SD15_SCHEDULER_CONFIG)
    # as in ComfyUI, ddim_uniform overshoots when steps does not divide 1000 (12 -> 13 steps)
    _assert_sigmas_form(sig, 13 if name == "ddim_uniform" else 12)
    assert sig[0] <= train[-1] * (1 + 1e-6)
    assert len(S.comfy_scheduler_sigmas(name, 10, train)) == 11


def test_comfy_normal_and_simple_values(train):
    normal = S.normal(4, train)
    assert normal[0] == pytest.approx(train[-1].item(), rel=1e-6)
    assert normal[-2] == pytest.approx(train[0].item(), rel=1e-6)
    t = 999 * 2 / 3  # second of 4 evenly spaced timesteps, log-sigma interpolated
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    expect = math.exp((1 - w) * math.log(train[lo]) + w * math.log(train[hi]))
    assert normal[1].item() == pytest.approx(expect, rel=1e-6)
    assert S.simple(4, train)[:-1].tolist() == train[[999, 749, 499, 249]].tolist()
    assert S.ddim_uniform(4, train)[:-1].tolist() == train[[751, 501, 251, 1]].tolist()
    assert len(S.sgm_uniform(4, train)) == 5


def test_unknown_comfy_scheduler_is_refused():
    with pytest.raises(ValueError, match="unknown ComfyUI scheduler 'foo'"):
        S.comfy_scheduler_sigmas("foo", 4, SD15_SCHEDULER_CONFIG)


def test_custom_split_and_flip():
    sig = S.custom([14.6, 7.0, 3.0, 1.0, 0.0])
    assert sig.dtype == torch.float32 and sig.tolist() == pytest.approx([14.6, 7.0, 3.0, 1.0, 0.0])
    high, low = S.split(sig, 2)
    assert high.tolist() == sig[:3].tolist() and low.tolist() == sig[2:].tolist()
    assert high[-1] == low[0]
    S.validate(low)
    S.validate(high, require_zero_end=False)
    flipped = S.flip(sig)
    assert flipped[0] == pytest.approx(1e-4) and flipped[1:].tolist() == sig.flip(0)[1:].tolist()
    with pytest.raises(ValueError, match="split step 9"):
        S.split(sig, 9)
    with pytest.raises(ValueError, match="non-increasing"):
        S.custom([1.0, 2.0, 0.0])


@pytest.mark.parametrize(
    "value, message",
    [
        ([3.0, 1.0, 0.0], "must be a torch.Tensor"),
        (torch.tensor([3, 1, 0]), "must be a float tensor"),
        (torch.zeros(2, 3), "must be 1-D, got shape \\(2, 3\\)"),
        (torch.tensor([0.0]), "at least 2 values"),
        (torch.tensor([3.0, float("nan"), 0.0]), "must be finite; index 1 is nan"),
        (torch.tensor([float("inf"), 1.0, 0.0]), "must be finite; index 0 is inf"),
        (torch.tensor([3.0, -1.0, 0.0]), "must be >= 0; index 1"),
        (torch.tensor([3.0, 1.0, 2.0, 0.0]), "rises from 1 at index 1 to 2 at index 2"),
        (torch.tensor([3.0, 1.0, 0.5]), "must end in 0"),
    ],
)
def test_validation_says_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        S.validate(value)


def test_sigmas_from_alphas(train):
    ac = (1 / (1 + train.double() ** 2)).float()
    sig = S.sigmas_from_alphas(ac, torch.tensor([801, 601, 401, 201, 1]))
    _assert_sigmas_form(sig, 5)
    np.testing.assert_allclose(sig[:-1].numpy(), train[[801, 601, 401, 201, 1]].numpy(), rtol=1e-5)
    # fractional timesteps interpolate in log sigma
    mid = S.sigmas_from_alphas(ac, torch.tensor([500.5]))[0].item()
    assert mid == pytest.approx(math.sqrt(train[500].item() * train[501].item()), rel=1e-5)
