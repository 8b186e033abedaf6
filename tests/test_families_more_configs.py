"""The SD3.5 configurations shipped in models/configs build the published architectures, so SD3.5 single
files are configured offline: parameter counts of each part built on the meta device (the transformer's
count includes its position-embedding table, which the files hold: 8.1B for large, 2.5B for medium, as
published), and a checkpoint's shapes pick the right one."""

from functools import lru_cache

import pytest
import torch
from test_families_configs import build

from nodes.models import CONFIGS_DIR

#: the published models' parts: text encoders and VAE are SD3's (CLIP-L with its projection, OpenCLIP bigG,
#: T5 v1.1 XXL's encoder, the 16-channel VAE)
SHARED = {"vae": 83_819_683, "text_encoder": 123_650_304, "text_encoder_2": 694_659_840,
          "text_encoder_3": 4_762_310_656}
TRANSFORMERS = {"stable-diffusion-3.5-large": 8_146_280_768, "stable-diffusion-3.5-medium": 2_469_663_936}


def count(module) -> int:
    """Parameters (each tied one once) and saved buffers: what the model's files hold."""
    saved = set(module.state_dict())
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for n, b in module.named_buffers()
                                                             if n in saved)


@lru_cache
def transformer(name: str):
    return build(CONFIGS_DIR / name, "transformer")


def test_shipped_sd35_text_encoders_and_vae_are_sd3s():
    first, *others = TRANSFORMERS
    assert {part: count(build(CONFIGS_DIR / first, part)) for part in SHARED} == SHARED
    for other in others:  # the same files in every SD3.5 folder
        for part in SHARED:
            assert (CONFIGS_DIR / other / part / "config.json").read_bytes() == \
                (CONFIGS_DIR / first / part / "config.json").read_bytes()


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_shipped_sd35_configs_build_the_published_models(name):
    from nodes import families

    folder = CONFIGS_DIR / name
    counts = {"transformer": count(transformer(name))}
    assert counts == {"transformer": TRANSFORMERS[name]}
    assert round(counts["transformer"] / 1e9, 1) == {"stable-diffusion-3.5-large": 8.1,
                                                      "stable-diffusion-3.5-medium": 2.5}[name]
    assert families.for_folder(folder).name == "sd3"


def original_shapes(folder) -> dict:
    """The tensor shapes of an all-in-one checkpoint of the model ``folder`` configures (meta device)."""
    from single_files import sd3_original

    with torch.device("meta"):
        return {"model.diffusion_model." + k: tuple(v.shape)
                for k, v in sd3_original(transformer(folder.name)).items()}


def test_a_checkpoints_shapes_pick_its_sd35_config():
    from nodes import families

    sd3 = families.by_name("sd3")
    configs = {n: transformer(n).config for n in TRANSFORMERS}
    for name in TRANSFORMERS:
        shapes = original_shapes(CONFIGS_DIR / name)
        assert sd3.matches_file(shapes)
        fits = [other for other, cfg in configs.items() if not sd3.network_file_mismatch(shapes, cfg)]
        assert fits == [name]


@pytest.mark.parametrize(("name", "prediction"), [("stable-diffusion-2-1", "v_prediction"),
                                                  ("stable-diffusion-2-1-base", "epsilon")])
def test_shipped_sd21_configs_build_the_published_models(name, prediction):
    from nodes import families
    from nodes.families.base import read_json

    folder = CONFIGS_DIR / name
    counts = {part: sum(p.numel() for p in build(folder, part).parameters()) for part in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}
    assert families.for_folder(folder).name == "sd2"
    assert read_json(folder / "scheduler" / "scheduler_config.json")["prediction_type"] == prediction


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_sd35_tokenizers_are_the_real_ones(name):
    """CLIP-L pads with its end token, CLIP-G with "!" (as SDXL's), T5 with the real vocabulary."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    folder = CONFIGS_DIR / name
    one, two = (CLIPTokenizer.from_pretrained(str(folder / t)) for t in ("tokenizer", "tokenizer_2"))
    assert one("a cat").input_ids == two("a cat").input_ids == [49406, 320, 2368, 49407]
    assert (one.pad_token, two.pad_token) == ("<|endoftext|>", "!")
    t5 = T5TokenizerFast.from_pretrained(str(folder / "tokenizer_3"))
    assert t5("a cat").input_ids == [3, 9, 1712, 1]
