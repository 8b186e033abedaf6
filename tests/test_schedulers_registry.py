import diffusers
import pytest
from diffusers.utils import DummyObject

from schedulers import registry
from schedulers.registry import SD15_SCHEDULER_CONFIG, MissingDependencyError
from schedulers.schedule import build_schedule

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

GUIDE_NAMES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpm_singlestep": "DPMSolverSinglestepScheduler",
    "deis": "DEISMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "kdpm2": "KDPM2DiscreteScheduler",
    "kdpm2_ancestral": "KDPM2AncestralDiscreteScheduler",
    "dpmpp_sde": "DPMSolverSDEScheduler",
}


def test_every_scheduler_of_the_guide_is_registered():
    for name, cls_name in GUIDE_NAMES.items():
        assert registry.get(name).cls is getattr(diffusers, cls_name)
    assert registry.names()[: len(registry.REGISTRY)] == list(registry.REGISTRY)


@pytest.mark.parametrize("name", registry.names())
def test_entry_builds_from_the_model_config(name):
    entry = registry.get(name)
    with registry.quiet_diffusers():
        sched = entry.build(SD15_SCHEDULER_CONFIG)
    assert type(sched) is entry.cls
    assert sched.config.num_train_timesteps == 1000
    assert sched.config.beta_schedule == "scaled_linear"
    for key, value in entry.overrides.items():
        assert sched.config[key] == value
    assert entry.label


def test_config_overrides_of_variants():
    assert registry.get("dpmpp_2m_sde").overrides == {"algorithm_type": "sde-dpmsolver++"}
    assert registry.get("dpmpp_3m").overrides == {"solver_order": 3}
    assert registry.get("dpmpp_2m").cls is registry.get("dpmpp_2m_sde").cls


def test_capabilities_come_from_the_classes():
    assert registry.get("euler").accepts_sigmas
    # UniPC's set_timesteps has `sigmas`, but only honours it for flow-matching models
    assert not registry.get("unipc").accepts_sigmas
    assert not registry.get("ddim").accepts_sigmas
    assert registry.get("dpmpp_2m").accepts_timesteps
    assert not registry.get("pndm").accepts_timesteps
    assert registry.get("heun").sigma_spacings == ("karras", "exponential", "beta")
    assert registry.get("euler_ancestral").sigma_spacings == ()
    assert not registry.get("dpm_singlestep").supports_timestep_spacing
    assert registry.get("heun").order == 2
    assert registry.get("euler_ancestral").step_accepts("generator")
    assert registry.get("ddim").step_accepts("eta")
    stochastic = {n for n, e in registry.REGISTRY.items() if e.stochastic}
    assert {"ddpm", "euler_ancestral", "kdpm2_ancestral", "dpmpp_sde", "dpmpp_2m_sde"} <= stochastic
    assert not {"ddim", "euler", "heun", "dpmpp_2m", "unipc"} & stochastic


def test_compatibles_match_pndm_compatibles():
    with registry.quiet_diffusers():
        pndm = diffusers.PNDMScheduler.from_config(dict(SD15_SCHEDULER_CONFIG))
    compatible = {c.__name__ for c in pndm.compatibles}
    registered = {e.class_name for e in registry.REGISTRY.values()}
    names = registry.compatible_names(pndm)
    assert {registry.get(n).class_name for n in names} == compatible & registered
    # every registered name on a compatible class is offered, variants included
    assert names == [n for n, e in registry.REGISTRY.items() if e.class_name in compatible]
    assert "dpmpp_2m_sde" in names and "lcm" not in names
    assert registry.compatible_names("pndm") == names
    assert registry.compatible_names(diffusers.PNDMScheduler) == names
    assert registry.compatible_names("lcm") == ["lcm"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown scheduler 'nope'.*euler_ancestral"):
        registry.get("nope")


@pytest.mark.parametrize(
    "name, class_name, package",
    [("lms", "LMSDiscreteScheduler", "scipy"), ("dpmpp_sde", "DPMSolverSDEScheduler", "torchsde")],
)
def test_missing_dependency_error_names_the_package(monkeypatch, name, class_name, package):
    # what diffusers exports when the package is absent: a placeholder class that fails on use
    placeholder = DummyObject(class_name, (), {"_backends": ["torch", package]})
    monkeypatch.setattr(diffusers, class_name, placeholder)
    with pytest.raises(MissingDependencyError) as err:
        _ = registry.get(name).cls
    msg = str(err.value)
    assert f"'{name}'" in msg and class_name in msg and f"pip install {package}" in msg
    with pytest.raises(MissingDependencyError, match=package):
        build_schedule(name, SD15_SCHEDULER_CONFIG, 10)
    assert isinstance(err.value, ImportError)
