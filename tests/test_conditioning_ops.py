"""ComfyUI's conditioning nodes (Combine, Concat, Average, SetArea*, SetMask, SetTimestepRange) and how the
guidance weighs several entries: areas in latent pixels (// 8), the 8-pixel ramps at inner edges, masks,
strengths, timestep ranges and the partner areas of the other side -- ComfyUI's calc_cond_batch
arithmetic, checked with a network whose prediction is known and end to end on the real models."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context, make_executor
from tiny_families import executor_over, shared_family
from tiny_sd import single_thread

from graph_runtime import NodeError
from nodes import conditioning_ops as ops
from nodes.guidance import guidance_entries, resolve_area
from nodes.types import Conditioning, combine
from schedulers.guidance import CFGDenoiser, CondEntry, area_weights
from schedulers.model_sampling import Discrete, Flow, model_sampling

SHAPE = (1, 4, 32, 32)


def ramp_profile(size: int, start: int, total: int) -> torch.Tensor:
    """ComfyUI's feathering along one axis, written out: rr = min(8, size // 4) pixels rising (t + 1) / rr
    from each inner edge."""
    p = torch.ones(size)
    rr = min(8, size // 4)
    for t in range(rr):
        if start != 0:
            p[t] *= (t + 1) / rr
        if start + size < total:
            p[size - 1 - t] *= (t + 1) / rr
    return p


@pytest.mark.parametrize("area", [(16, 16, 8, 8), (8, 24, 0, 4), (40, 40, 8, 8), (2, 3, 5, 5), (32, 32, 0, 0)])
def test_area_weights_are_comfyuis_ramps(area):
    e = CondEntry({}, area=area, strength=1.5)
    w = area_weights(e, SHAPE, torch.device("cpu"))
    h, wd, y, x = min(area[0], 32 - area[2]), min(area[1], 32 - area[3]), area[2], area[3]
    want = 1.5 * torch.outer(ramp_profile(h, y, 32), ramp_profile(wd, x, 32))
    assert w.shape == (1, 1, h, wd)
    assert torch.allclose(w[0, 0], want, atol=1e-7)


def test_a_mask_replaces_the_ramps():
    mask = torch.rand(1, 32, 32)
    w = area_weights(CondEntry({}, area=(16, 16, 8, 8), strength=2.0, mask=mask), SHAPE, torch.device("cpu"))
    assert torch.allclose(w[0, 0], 2.0 * mask[0, 8:24, 8:24])


def constant_network(x, t, return_dict=False, encoder_hidden_states=None, **_):
    """Predicts, everywhere, the first number of the entry's text states (so each entry's share is visible)."""
    return encoder_hidden_states[:, 0, 0].view(-1, 1, 1, 1) * torch.ones_like(x)


def states(value: float, batch: int = 1) -> dict:
    return {"encoder_hidden_states": torch.full((batch, 3, 2), float(value))}


def test_entries_are_averaged_by_their_weights():
    full = CondEntry(states(1.0))
    area = CondEntry(states(3.0), area=(16, 16, 8, 8), strength=2.0)
    d = CFGDenoiser(constant_network, [full, area], None, cfg=1.0)
    out = d(torch.zeros(SHAPE), torch.tensor(500.0))
    w = torch.zeros(32, 32)
    w[8:24, 8:24] = 2.0 * torch.outer(ramp_profile(16, 8, 32), ramp_profile(16, 8, 32))
    want = (1.0 + 3.0 * w) / (1.0 + w)
    assert torch.allclose(out[0, 0], want, atol=1e-6) and torch.equal(out[0, 0], out[0, 3])
    assert d.calls == 2  # different sizes: two network calls


def test_guidance_of_entries():
    pos = [CondEntry(states(2.0)), CondEntry(states(4.0))]
    neg = [CondEntry(states(1.0))]
    d = CFGDenoiser(constant_network, pos, neg, cfg=3.0)
    out = d(torch.zeros(SHAPE), torch.tensor(1.0))
    assert torch.allclose(out, torch.full(SHAPE, 1.0 + 3.0 * (3.0 - 1.0)))
    assert d.calls == 1  # same shapes batch into one call


def test_timestep_range_gates_an_entry():
    ms = model_sampling({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                         "num_train_timesteps": 1000})
    assert isinstance(ms, Discrete)
    assert ms.percent_timestep(0.0) == math.inf and ms.percent_timestep(1.0) == -math.inf
    assert ms.percent_timestep(0.5) == pytest.approx(499.5)
    flow = Flow(shift=3.0)
    assert flow.percent_timestep(0.5) == pytest.approx(1000 * 3 * 0.5 / (1 + 2 * 0.5))
    late = CondEntry(states(5.0), timestep_range=(ms.percent_timestep(0.5), ms.percent_timestep(1.0)))
    d = CFGDenoiser(constant_network, [CondEntry(states(1.0)), late], None, cfg=1.0)
    assert torch.allclose(d(torch.zeros(SHAPE), torch.tensor(600.0)), torch.ones(SHAPE))
    assert torch.allclose(d(torch.zeros(SHAPE), torch.tensor(400.0)), torch.full(SHAPE, 3.0))


def test_uncovered_pixels():
    """Without ``empty`` a pixel no entry covers predicts 0; with it (the sampler's k-diffusion path), the
    output whose denoised estimate is 0 -- ComfyUI's average over no entries."""
    area = CondEntry(states(7.0), area=(8, 8, 0, 0))
    x = torch.randn(SHAPE)
    out = CFGDenoiser(constant_network, [area], None, cfg=1.0)(x, torch.tensor(1.0))
    assert torch.allclose(out[..., :8, :8], torch.full((1, 4, 8, 8), 7.0)) and not out[..., 8:, :].any()
    calls = []

    def empty(x_in, t):
        calls.append(1)
        return x_in * 0 - 5.0

    d = CFGDenoiser(constant_network, [area], [CondEntry(states(1.0))], cfg=2.0, empty=empty)
    out = d(x, torch.tensor(1.0))
    d(x, torch.tensor(2.0))
    assert torch.allclose(out[..., :8, :8], torch.full((1, 4, 8, 8), 1.0 + 2.0 * (7.0 - 1.0)))
    assert torch.allclose(out[..., 8:, :], torch.full((1, 4, 24, 32), 1.0 + 2.0 * (-5.0 - 1.0)))
    assert len(calls) == 2 and len(d._uncovered) == 1  # the holes are found once per set of active entries


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_zero_estimate(kind):
    ms = Flow(shift=3.0) if kind == "flow" else model_sampling(
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
         "prediction_type": kind})
    sigma = torch.tensor(0.7 if kind == "flow" else 2.5)
    x = torch.randn(1, 4, 3, 3)
    assert ms.denoised(x, sigma, ms.zero_estimate(x, sigma)).abs().max() < 1e-5
    assert torch.allclose(ms.sigma(ms.timestep(sigma)), sigma, rtol=1e-5)


# ---- the nodes ----------------------------------------------------------------------------------------------


def cond(value: float = 0.0, tokens: int = 77, pooled: bool = False, prompt: str = "p") -> Conditioning:
    return Conditioning(torch.full((1, tokens, 8), value), prompt,
                        pooled=torch.full((1, 4), value) if pooled else None)


def run_node(cls, tmp_path, **inputs):
    return cls().execute(cls.Inputs(**inputs), context(tmp_path))


def test_set_area_keeps_latent_pixels(tmp_path):
    (c,) = run_node(ops.ConditioningSetArea, tmp_path, conditioning=combine([cond(1), cond(2)]), width=200,
                    height=96, x=12, y=72, strength=0.5)
    assert [e.area for e in c.entries] == [(12, 25, 9, 1)] * 2 and {e.strength for e in c.entries} == {0.5}
    assert ops.ConditioningSetArea.Inputs.model_fields["width"].default == 64
    (p,) = run_node(ops.ConditioningSetAreaPercentage, tmp_path, conditioning=cond(), width=0.5, height=0.25,
                    x=0.5, y=0.1, strength=1.0)
    assert p.area == ("percentage", 0.25, 0.5, 0.1, 0.5)
    assert resolve_area(p, 40, 64, "positive").area == (10, 32, 4, 32)
    (s,) = run_node(ops.ConditioningSetAreaStrength, tmp_path, conditioning=p, strength=3.0)
    assert s.strength == 3.0 and s.area == p.area


def test_combine_concat_average(tmp_path):
    a, b = cond(1.0, pooled=True, prompt="a"), cond(3.0, tokens=154, pooled=True, prompt="b")
    (c,) = run_node(ops.ConditioningCombine, tmp_path, conditioning_1=a, conditioning_2=combine([b, a]))
    assert [e.prompt for e in c.entries] == ["a", "b", "a"]
    (cat,) = run_node(ops.ConditioningConcat, tmp_path, conditioning_to=c, conditioning_from=b)
    assert [e.embeds.shape[1] for e in cat.entries] == [77 + 154, 154 + 154, 77 + 154]
    assert torch.equal(cat.entries[0].pooled, a.pooled)
    (avg,) = run_node(ops.ConditioningAverage, tmp_path, conditioning_to=b, conditioning_from=a,
                      conditioning_to_strength=0.25)
    assert torch.allclose(avg.embeds[:, :77], torch.full((1, 77, 8), 0.25 * 3 + 0.75 * 1))
    assert torch.allclose(avg.embeds[:, 77:], torch.full((1, 77, 8), 0.25 * 3))  # from's missing tokens: 0
    assert torch.allclose(avg.pooled, torch.full((1, 4), 1.5))
    wide = Conditioning(torch.zeros(1, 77, 16), "w")
    with pytest.raises(NodeError, match="conditioning_from: embeddings of width 16"):
        run_node(ops.ConditioningConcat, tmp_path, conditioning_to=a, conditioning_from=wide)


def test_set_mask_and_bounds(tmp_path):
    mask = torch.zeros(64, 64)
    mask[8:20, 40:44] = 1.0
    (c,) = run_node(ops.ConditioningSetMask, tmp_path, conditioning=cond(), mask=mask, strength=0.7,
                    set_cond_area="mask bounds")
    assert c.mask.shape == (1, 64, 64) and c.mask_strength == 0.7 and c.set_area_to_bounds
    r = resolve_area(c, 32, 32, "positive")  # bilinear to the latent, then the box (at least 8 x 8)
    ys, xs = torch.nonzero(r.mask[0], as_tuple=True)
    assert r.area == (max(8, int(ys.max() - ys.min()) + 1), 8, int(ys.min()), int(xs.min()))
    empty = resolve_area(replace(c, mask=torch.zeros(1, 64, 64)), 32, 32, "positive")
    assert empty.area == (8, 8, 0, 0)


def test_timestep_range_node(tmp_path):
    (c,) = run_node(ops.ConditioningSetTimestepRange, tmp_path, conditioning=combine([cond(), cond()]),
                    start=0.2, end=0.6)
    assert {(e.start_percent, e.end_percent) for e in c.entries} == {(0.2, 0.6)}
    assert not c.is_plain and cond().is_plain


def test_entries_for_the_model(loaded, tmp_path):
    """Areas of one side get a partner area on the other made of its text; percentages and ranges resolve."""
    from nodes.conditioning import encode

    model = loaded.model
    pos_full, neg = encode(loaded.clip, "a red circle"), encode(loaded.clip, "")
    (pos_area,) = run_node(ops.ConditioningSetArea, tmp_path, conditioning=encode(loaded.clip, "blue"),
                           width=128, height=64, x=64, y=0, strength=1.0)
    (pos_area,) = run_node(ops.ConditioningSetTimestepRange, tmp_path, conditioning=pos_area, start=0.0, end=0.5)
    samples = torch.zeros(1, 4, 24, 32)
    pos, negs = guidance_entries(model, combine([pos_full, pos_area]), neg, samples, True)
    assert [e.area for e in pos] == [None, (8, 16, 0, 8)]
    assert [e.area for e in negs] == [None, (8, 16, 0, 8)]
    assert torch.equal(negs[1].inputs["encoder_hidden_states"], negs[0].inputs["encoder_hidden_states"])
    assert negs[1].timestep_range == pos[1].timestep_range == (math.inf, pytest.approx(499.5))


def test_entry_limit(loaded, monkeypatch, tmp_path):
    from graph_runtime.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_conditioning_entries", 4)
    c = cond()
    with pytest.raises(NodeError, match=r"positive / negative: 5 conditioning entries .*\(max_conditioning_entries\)"):
        guidance_entries(loaded.model, combine([c] * 4), c, torch.zeros(1, 4, 8, 8), True)
    (three,) = run_node(ops.ConditioningCombine, tmp_path, conditioning_1=c, conditioning_2=combine([c, c]))
    with pytest.raises(NodeError, match="conditioning_1 / conditioning_2: 6 entries together .* limit of 4"):
        run_node(ops.ConditioningCombine, tmp_path, conditioning_1=three, conditioning_2=three)


# ---- end to end -----------------------------------------------------------------------------------------------


def graph(pos: dict, extra: dict | None = None, *, sampler: str = "euler", size: int = 64) -> dict:
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-shapes-sd"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 3, "cfg": 5.0,
                                                   "sampler_name": sampler, "scheduler": "normal",
                                                   "positive": pos, "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    doc.update(extra or {})
    return doc


def image(executor, doc) -> torch.Tensor:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    return res.values["6"][0]


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    return make_executor(tmp_path_factory.mktemp("cond"), services=services)


def test_combined_and_area_runs(executor):
    base = image(executor, graph(["2", 0], size=128))
    twice = image(executor, graph(["8", 0], size=128, extra={
        "8": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["2", 0]}}}))
    assert torch.allclose(base, twice, atol=1e-4)  # the same prompt twice averages to itself
    area = image(executor, graph(["10", 0], size=128, extra={
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue square", "clip": ["1", 1]}},
        "8": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["9", 0], "width": 128, "height": 64,
                                                              "x": 0, "y": 64, "strength": 1.0}},
        "10": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["8", 0]}}}))
    assert torch.isfinite(area).all() and (area - base).abs().max() > 1e-3
    # the area covers the lower half: the upper rows (outside the area and its partner on the negative) move
    # less than the lower ones
    assert (area - base)[:, :48].abs().mean() < (area - base)[:, 80:].abs().mean()


def test_timestep_ranges_run(executor):
    doc = graph(["12", 0], {
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue square", "clip": ["1", 1]}},
        "10": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["2", 0], "start": 0.0,
                                                                        "end": 0.5}},
        "11": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["9", 0], "start": 0.5,
                                                                        "end": 1.0}},
        "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["10", 0], "conditioning_2": ["11", 0]}}})
    for sampler in ("euler", "ddim"):  # a k-diffusion rule and a diffusers scheduler
        doc["5"]["inputs"]["sampler_name"] = sampler
        mixed = image(executor, doc)
        only_first = image(executor, graph(["2", 0], sampler=sampler))
        assert torch.isfinite(mixed).all() and (mixed - only_first).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_areas_on_other_families(family, tmp_path_factory, services):
    fam = shared_family(family, tmp_path_factory)
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": f"tiny-{family}", "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "9": {"class_type": "TextEncode", "inputs": {"text": "blue", "clip": ["1", 1]}},
        "8": {"class_type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": ["9", 0], "width": 0.5,
                                                                        "height": 1.0, "x": 0.5, "y": 0.0,
                                                                        "strength": 1.0}},
        "10": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["8", 0]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 2, "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": "euler" if family == "sdxl"
                                                    else "flow_euler", "steps": 2}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["10", 0], "negative": ["3", 0],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": 1, "cfg": 4.0}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
    }
    with executor_over([fam.models], tmp_path_factory.mktemp(f"area-{family}"), services) as ex, single_thread():
        res = ex.run(doc)
    assert res.status == "success", res.error
    out = res.values["11"][0]
    assert out.shape == (2, 64, 64, 3) and torch.isfinite(out).all()


def test_area_composition_workflow(executor):
    """workflows/area_composition.json (ComfyUI's names): a whole-image prompt and one prompt per half."""
    import json

    from nodes_support import ROOT

    doc = json.loads((ROOT / "workflows" / "area_composition.json").read_text())
    doc["11"]["inputs"]["steps"] = 3
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    out = res.values["12"][0]
    assert out.shape == (1, 128, 128, 3) and torch.isfinite(out).all()
