"""Every model family through the same graph (LoadModel -> TextEncode x2 -> EmptyLatent -> Scheduler ->
Sampler -> VAEDecode) against its own diffusers pipeline with the scheduler swapped the guide's way: SD2.x
768-v (StableDiffusionPipeline, v-prediction), SDXL (StableDiffusionXLPipeline) and SD3
(StableDiffusion3Pipeline, with and without T5), two schedulers and two seeds each; the decoded pixels are
equal (max abs difference exactly 0) on tiny random-weight models."""


import pytest
import torch
from nodes_support import *  # noqa: F403
from tiny_families import executor_over, shared_family
from tiny_sd import single_thread

from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)

PROMPT = "a red circle on a blue square"
STEPS, CFG = 4, 6.0
CASES = {
    "sd2v": ("ddim", "dpmpp_2m"),
    "sdxl": ("euler", "dpmpp_2m"),
    "sd3": ("flow_euler", "flow_dpmpp_2m"),
    "sd3-no-t5": ("flow_euler",),
}


def graph(model: str, scheduler: str, seed: int, steps: int = STEPS, cfg: float = CFG, sampler: dict | None = None):
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": model, "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                      "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": scheduler, "steps": steps}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": seed,
                                                  "cfg": cfg}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    if sampler is not None:
        doc["6"]["inputs"].update(sampler)
    return doc


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {name: shared_family(name, tmp_path_factory) for name in CASES}


@pytest.fixture(scope="module")
def executor(tmp_path_factory, families, services):
    with executor_over([f.models for f in families.values()], tmp_path_factory.mktemp("families"), services) as ex:
        yield ex


def swap(fam, name: str) -> None:
    entry = registry.get(name)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = entry.cls.from_config(fam.config, **entry.config_overrides(fam.config))


def pipeline_image(fam, name: str, seed: int) -> torch.Tensor:
    swap(fam, name)
    with single_thread():
        out = fam.pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


def run(executor, doc) -> torch.Tensor:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    return res.values["7"][0]


@pytest.mark.parametrize(("family", "scheduler"), [(f, s) for f, ss in CASES.items() for s in ss])
@pytest.mark.parametrize("seed", [3, 1234])
def test_family_matches_its_pipeline(executor, families, family, scheduler, seed):
    ours = run(executor, graph(f"tiny-{family}", scheduler, seed))
    ref = pipeline_image(families[family], scheduler, seed)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_families_are_recognised(executor, families):
    from nodes import families as fam

    assert {n: fam.for_folder(f.folder).name for n, f in families.items()} == {
        "sd2v": "sd2", "sdxl": "sdxl", "sd3": "sd3", "sd3-no-t5": "sd3"}
