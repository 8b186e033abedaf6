"""The embedded tiny-shapes model: tokenizer, procedural data, shipped weights and prompt adherence."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from models.shapes.data import (  # noqa: E402
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    Spec,
    all_specs,
    heldout_specs,
    make_dataset,
    parse_prompt,
    random_specs,
    render,
    train_specs,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "tiny-shapes-sd"
CARD_METRICS = ROOT / "models" / "shapes" / "metrics.json"


def test_tokenizer_gives_real_clip_ids():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    assert len(tok) == 49408
    assert tok.model_max_length == 77
    assert tok("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    padded = tok("a red circle", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[5:] == [49407] * 72


def test_grammar_has_900_combinations_and_a_fixed_heldout_split():
    specs = all_specs()
    assert len(specs) == len(set(specs)) == 900
    assert all(s.color != s.background for s in specs)
    held, train = heldout_specs(), train_specs()
    assert held == heldout_specs()  # fixed
    assert len(held) == 60 and not set(held) & set(train) and len(train) == 840
    # every attribute value still appears in training
    for name in ATTRIBUTES:
        assert {getattr(s, name) for s in train} == set(ATTRIBUTE_VALUES[name])


def test_prompts_round_trip_through_the_grammar():
    for spec in random_specs(50, seed=3):
        assert parse_prompt(spec.prompt) == spec
    with pytest.raises(ValueError):
        Spec("small", "red", "circle", "center", "red")
    with pytest.raises(ValueError):
        parse_prompt("a purple circle")


def test_generator_is_deterministic_and_draws_the_spec():
    specs = random_specs(20, seed=11)
    a, sa = make_dataset(specs, 2, seed=5)
    b, sb = make_dataset(specs, 2, seed=5)
    c, _ = make_dataset(specs, 2, seed=6)
    assert a.shape == (40, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)
    spec = Spec("large", "red", "square", "top left", "blue")
    img = render(spec).astype(int)
    assert tuple(img[16, 16]) == (215, 35, 35)  # the shape sits at its position
    assert tuple(img[48, 48]) == (35, 65, 215)  # background elsewhere
