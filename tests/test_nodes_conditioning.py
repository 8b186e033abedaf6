"""TextEncode against diffusers' StableDiffusionPipeline.encode_prompt."""

from __future__ import annotations

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context

from nodes.conditioning import TextEncode
from nodes.types import match_lengths

LONG = ", ".join(["a small red circle on a blue square"] * 12)


@pytest.fixture(scope="module")
def pipe(loaded):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=loaded.vae.vae, text_encoder=loaded.clip.text_encoder, tokenizer=loaded.clip.tokenizer,
        unet=loaded.model.unet, scheduler=PNDMScheduler.from_config(loaded.model.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def encode(clip, text, tmp_path, mode="truncate"):
    events = []
    (cond,) = TextEncode().execute(TextEncode.Inputs(clip=clip, text=text, long_prompt=mode),
                                   context(tmp_path, events=events))
    return cond, [d["message"] for e, d in events if e == "log"]


@pytest.mark.parametrize("text", ["a red circle", "", "TWO Blue squares, and a triangle!"])
def test_equals_encode_prompt(loaded, pipe, tmp_path, text):
    cond, warnings = encode(loaded.clip, text, tmp_path)
    ref, _ = pipe.encode_prompt(text, torch.device("cpu"), 1, False)
    assert cond.embeds.shape == ref.shape == (1, 77, loaded.clip.text_encoder.config.hidden_size)
    assert torch.equal(cond.embeds, ref) and cond.prompt == text and not warnings


def test_long_prompt_truncates_with_a_warning(loaded, pipe, tmp_path):
    n_tokens = len(loaded.clip.tokenizer(LONG).input_ids)
    assert n_tokens > 77
    cond, warnings = encode(loaded.clip, LONG, tmp_path)
    ref, _ = pipe.encode_prompt(LONG, torch.device("cpu"), 1, False)
    assert torch.equal(cond.embeds, ref)
    assert cond.extra["dropped_tokens"] == n_tokens - 77
    assert len(warnings) == 1 and f"{n_tokens - 77} tokens were dropped" in warnings[0]


def test_chunked_long_prompt(loaded, tmp_path):
    cond, warnings = encode(loaded.clip, LONG, tmp_path, mode="chunk")
    body = len(loaded.clip.tokenizer(LONG).input_ids) - 2
    windows = -(-body // 75)
    assert cond.embeds.shape[1] == 77 * windows and not warnings
    # a prompt that fits gives the same embedding either way
    short_chunk, _ = encode(loaded.clip, "a red circle", tmp_path, mode="chunk")
    short, _ = encode(loaded.clip, "a red circle", tmp_path)
    assert torch.equal(short_chunk.embeds, short.embeds)
    a, b = match_lengths(cond.embeds, short.embeds)
    assert a.shape == b.shape == cond.embeds.shape
