"""The txt2img workflow (LoadModel -> TextEncode x2 -> EmptyLatent -> Scheduler -> Sampler -> VAEDecode) run by
the Executor against diffusers' own StableDiffusionPipeline with the scheduler swapped the guide's way
(``Class.from_config(pipe.scheduler.config)``), for every registered scheduler: the decoded pixels are equal
(max abs difference exactly 0) on the embedded model."""

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import has_embedded, make_executor
from sampling_support import *  # noqa: F403
from sampling_support import PROMPT, img2img, node_of, txt2img
from tiny_sd import single_thread

from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
    "ignore:Should have tb<=t1:UserWarning",
)

SEED, STEPS, CFG = 1234, 4, 6.0


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("parity"), services=services)


@pytest.fixture(scope="module")
def pipe(model_folder):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(model_folder, safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    p.base_config = dict(p.scheduler.config)  # the model's own, before any swap
    return p


def swap(pipe, name: str, seed: int) -> None:
    """The guide's swap: ``Class.from_config(pipe.scheduler.config)``, plus the entry's own overrides."""
    entry = registry.get(name)
    overrides = dict(entry.overrides)
    if entry.seed_config_key:  # DPM++ SDE seeds its Brownian tree from its config
        overrides[entry.seed_config_key] = seed
    with registry.quiet_diffusers():
        pipe.scheduler = entry.cls.from_config(pipe.base_config, **overrides)


def pipeline_image(pipe, name: str, steps=STEPS, cfg=CFG, seed=SEED) -> torch.Tensor:
    swap(pipe, name, seed)
    with single_thread():
        out = pipe(PROMPT, negative_prompt="", num_inference_steps=steps, guidance_scale=cfg, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


def workflow_image(executor, name: str, steps=STEPS, cfg=CFG, seed=SEED) -> torch.Tensor:
    doc = txt2img(name, steps=steps, seed=seed, cfg=cfg)
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    return res.values[node_of(doc, "VAEDecode")][0]


def test_uses_embedded_model():
    assert has_embedded(), "the embedded model is missing: models/tiny-shapes-sd"


@pytest.mark.parametrize("name", registry.fitting_names(registry.SD15_SCHEDULER_CONFIG))
def test_workflow_matches_pipeline(executor, pipe, name):
    ours = workflow_image(executor, name)
    ref = pipeline_image(pipe, name)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ref.std() > 0.01
    assert (ours - ref).abs().max().item() == 0.0


I2I_STEPS, STRENGTH = 5, 0.6


@pytest.mark.parametrize("name", registry.fitting_names(registry.SD15_SCHEDULER_CONFIG))
def test_img2img_workflow_matches_pipeline(executor, pipe, start_image, name):
    """workflows/img2img.json against StableDiffusionImg2ImgPipeline given the same encoded latents (the
    pipeline would otherwise draw a sample of the VAE posterior; VAEEncode takes its mode)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    doc = img2img(name, steps=I2I_STEPS, denoise=STRENGTH, seed=SEED, cfg=CFG)
    prompt = doc[node_of(doc, "Sampler")]["inputs"]["positive"][0]
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    ours = res.values[node_of(doc, "VAEDecode")][0]
    latents = res.values[node_of(doc, "VAEEncode")][0]["samples"]
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    i2i.base_config = pipe.base_config
    swap(i2i, name, SEED)
    with single_thread():
        ref = i2i(doc[prompt]["inputs"]["text"], image=latents, strength=STRENGTH, negative_prompt="",
                  num_inference_steps=I2I_STEPS, guidance_scale=CFG,
                  generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() == 0.0
