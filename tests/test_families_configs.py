"""The configurations shipped in models/configs build the published architectures (so single files of the
real models are configured offline): parameter counts of SD1.5's and SDXL base 1.0's parts, built on the meta
device (no memory), and SDXL's second tokenizer pads with "!" as the real one does."""

import pytest
import torch

from nodes.models import CONFIGS_DIR

#: parameter counts of the published models' parts
PUBLISHED = {
    "stable-diffusion-v1-5": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "stable-diffusion-xl-base-1.0": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                                     "text_encoder_2": 694_659_840},
}


def build(folder, part):
    import diffusers
    import transformers

    from nodes.families.base import read_json

    cfg = read_json(folder / part / "config.json")
    with torch.device("meta"):
        if "_class_name" in cfg:
            cls = getattr(diffusers, cfg["_class_name"])
            return cls.from_config(cls.load_config(str(folder / part)))
        cls = getattr(transformers, cfg["architectures"][0])
        return cls(cls.config_class.from_pretrained(str(folder / part)))


@pytest.mark.parametrize("name", PUBLISHED)
def test_shipped_configs_build_the_published_models(name):
    from nodes import families

    folder = CONFIGS_DIR / name
    counts = {part: sum(p.numel() for p in build(folder, part).parameters()) for part in PUBLISHED[name]}
    assert counts == PUBLISHED[name]
    assert families.for_folder(folder).name == {"stable-diffusion-v1-5": "sd1",
                                                "stable-diffusion-xl-base-1.0": "sdxl"}[name]


def test_sdxl_tokenizers_are_the_real_ones():
    from transformers import CLIPTokenizer

    folder = CONFIGS_DIR / "stable-diffusion-xl-base-1.0"
    one, two = (CLIPTokenizer.from_pretrained(str(folder / t)) for t in ("tokenizer", "tokenizer_2"))
    assert one("a cat").input_ids == two("a cat").input_ids == [49406, 320, 2368, 49407]
    assert (one.pad_token, two.pad_token, two.pad_token_id) == ("<|endoftext|>", "!", 0)


def test_the_default_scheduler_config_is_sd15s_shipped_one():
    """The runtime's default (a model without a scheduler config) and the shipped SD1.5 file say the same."""
    from diffusers import PNDMScheduler

    from nodes.families.base import read_json
    from schedulers.registry import SD15_SCHEDULER_CONFIG

    shipped = PNDMScheduler.from_config(read_json(CONFIGS_DIR / "stable-diffusion-v1-5" / "scheduler"
                                                  / "scheduler_config.json")).config
    default = PNDMScheduler.from_config(dict(SD15_SCHEDULER_CONFIG)).config
    def settings(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert settings(shipped) == settings(default)
