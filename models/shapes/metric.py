"""Prompt adherence: does a picture show what its prompt asks for?

    from models.shapes.metric import prompt_adherence, summarize
    results = prompt_adherence(images, prompts)   # images: float [B,H,W,3] in 0..1, uint8, or PIL list
    summarize(results)  # {"color": 0.98, ..., "all": 0.9}

Each prompt is parsed by the grammar of :mod:`models.shapes.data`; the classifier of
:mod:`models.shapes.classifier` reads colour, shape, position, size and background back from the
picture, and an attribute is a hit when both agree.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .classifier import load_classifier, to_input
from .data import ATTRIBUTE_VALUES, ATTRIBUTES, parse_prompt


@lru_cache(maxsize=1)
def _classifier():
    return load_classifier()


@torch.no_grad()
def predict_attributes(images) -> list[dict[str, str]]:
    """The attribute values the classifier reads in each picture."""
    model = _classifier()
    x = to_input(images)
    out = model(x)
    idx = {k: out[k].argmax(1).tolist() for k in ATTRIBUTES}
    return [{k: ATTRIBUTE_VALUES[k][idx[k][i]] for k in ATTRIBUTES} for i in range(x.shape[0])]


def prompt_adherence(images, prompts: list[str]) -> list[dict]:
    """Per picture: ``{attribute: hit}`` for the five attributes, ``"all"`` (fully obeyed) and ``"predicted"``."""
    preds = predict_attributes(images)
    if len(preds) != len(prompts):
        raise ValueError(f"{len(preds)} images for {len(prompts)} prompts")
    results = []
    for pred, prompt in zip(preds, prompts, strict=True):
        spec = parse_prompt(prompt)
        hits = {k: pred[k] == getattr(spec, k) for k in ATTRIBUTES}
        results.append({**hits, "all": all(hits.values()), "predicted": pred})
    return results


def summarize(results: list[dict]) -> dict[str, float]:
    """Share of hits per attribute and share of fully obeyed prompts."""
    n = max(1, len(results))
    return {k: sum(r[k] for r in results) / n for k in (*ATTRIBUTES, "all")}
