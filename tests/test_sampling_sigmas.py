"""SIGMAS nodes and the Sampler's sigmas input, on the embedded model through the Executor."""

import copy

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from sampling_support import node_of, txt2img, workflow
from tiny_sd import single_thread

from schedulers import sigmas as sigmas_mod

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("sigmas"), services=services)


def run(executor, doc):
    with single_thread():
        return executor.run(doc)


def with_sigmas(sigmas_node: dict, sampler="euler", steps_seed=3, **sampler_inputs) -> dict:
    """txt2img with the Sampler fed by a sigma node (id "50") instead of the Scheduler."""
    doc = txt2img("euler", steps=2, seed=steps_seed)
    doc["50"] = sigmas_node
    k = node_of(doc, "Sampler")
    del doc[k]["inputs"]["schedule"]
    del doc[node_of(doc, "Scheduler")]
    doc[k]["inputs"].update(sigmas=["50", 0], sampler=sampler, **sampler_inputs)
    return doc


def test_custom_sigmas_workflow(executor):
    doc = copy.deepcopy(workflow("custom_sigmas.json"))
    doc[node_of(doc, "KarrasSigmas")]["inputs"]["steps"] = 6
    doc[node_of(doc, "SplitSigmas")]["inputs"]["step"] = 3
    res = run(executor, doc)
    assert res.status == "success", res.error
    high, low = res.values[node_of(doc, "SplitSigmas")]
    assert len(high) == 4 and len(low) == 4 and high[-1] == low[0] and low[-1] == 0
    saved = [o["images"][0]["filename"] for o in res.outputs.values()]
    assert any(n.startswith("custom_sigmas_heun") for n in saved)


def test_split_run_equals_one_run_for_euler(executor):
    karras = {"class_type": "KarrasSigmas", "inputs": {"model": ["1", 0], "steps": 6, "rho": 7.0}}
    whole = run(executor, with_sigmas(karras, "euler"))
    doc = with_sigmas(karras, "euler")
    doc["51"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["50", 0], "step": 2}}
    k = node_of(doc, "Sampler")
    doc[k]["inputs"]["sigmas"] = ["51", 0]
    doc["52"] = copy.deepcopy(doc[k])
    doc["52"]["inputs"].update(sigmas=["51", 1], latent=[k, 0], add_noise=False)
    doc[node_of(doc, "VAEDecode")]["inputs"]["samples"] = ["52", 0]
    split = run(executor, doc)
    assert whole.status == split.status == "success", (whole.error, split.error)
    a = whole.values[k][0]["samples"]
    b = split.values["52"][0]["samples"]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_karras_node_uses_the_model_range(executor):
    doc = with_sigmas({"class_type": "KarrasSigmas", "inputs": {"model": ["1", 0], "steps": 5, "rho": 7.0}})
    res = run(executor, doc)
    assert res.status == "success", res.error
    got = res.values["50"][0]
    model = res.values["1"][0]
    want = sigmas_mod.comfy_scheduler_sigmas("karras", 5, model.scheduler_config)
    assert torch.equal(got, want)


@pytest.mark.parametrize("node", [
    {"class_type": "ExponentialSigmas", "inputs": {"model": ["1", 0], "steps": 4}},
    {"class_type": "BetaSigmas", "inputs": {"model": ["1", 0], "steps": 4, "alpha": 0.6, "beta": 0.6}},
    {"class_type": "CustomSigmas", "inputs": {"sigmas": "[14.6, 4.0, 1.0, 0.3, 0]"}},
])
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral", "lms"])
def test_sigma_nodes_drive_rules(executor, node, sampler):
    res = run(executor, with_sigmas(node, sampler))
    assert res.status == "success", res.error
    assert torch.isfinite(res.values[node_of(with_sigmas(node), "VAEDecode")][0]).all()


@pytest.mark.parametrize("text, words", [
    ("14.6, 7, banana, 0", ["sigmas", "banana", "not a number"]),
    ("1.0, 3.0, 0", ["sigmas", "non-increasing", "index 0"]),
    ("14.6, 1.0, 0.5", ["sigmas", "end in 0"]),
    ("", ["sigmas"]),
    ("5, nan, 0", ["sigmas", "finite"]),
])
def test_custom_sigmas_errors(executor, text, words):
    res = run(executor, with_sigmas({"class_type": "CustomSigmas", "inputs": {"sigmas": text}}))
    assert res.status == "error" and res.error["node_id"] == "50"
    for w in words:
        assert w in res.error["exception_message"], res.error["exception_message"]


def test_flipped_sigmas_are_refused_by_the_sampler(executor):
    doc = with_sigmas({"class_type": "CustomSigmas", "inputs": {"sigmas": "3, 1, 0"}})
    doc["51"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": ["50", 0]}}
    doc[node_of(doc, "Sampler")]["inputs"]["sigmas"] = ["51", 0]
    res = run(executor, doc)
    assert res.status == "error" and res.error["node_id"] == node_of(doc, "Sampler")
    assert "sigmas" in res.error["exception_message"] and "non-increasing" in res.error["exception_message"]
    assert torch.equal(res.values["51"][0], torch.tensor([1e-4, 1.0, 3.0]))


def test_sampler_needs_exactly_one_of_schedule_and_sigmas(executor):
    doc = txt2img("euler", steps=2)
    doc["50"] = {"class_type": "CustomSigmas", "inputs": {"sigmas": "3, 1, 0"}}
    doc[node_of(doc, "Sampler")]["inputs"]["sigmas"] = ["50", 0]
    res = run(executor, doc)
    assert res.status == "error" and "exactly one" in res.error["exception_message"]
    del doc[node_of(doc, "Sampler")]["inputs"]["sigmas"]
    del doc[node_of(doc, "Sampler")]["inputs"]["schedule"]
    res = run(executor, doc)
    assert res.status == "error" and "exactly one" in res.error["exception_message"]


def test_scheduler_from_sigmas(executor):
    doc = with_sigmas({"class_type": "CustomSigmas", "inputs": {"sigmas": "10, 2, 0.5, 0"}}, "euler")
    direct = run(executor, doc)
    doc2 = copy.deepcopy(doc)
    doc2["51"] = {"class_type": "SchedulerFromSigmas", "inputs": {"model": ["1", 0], "sigmas": ["50", 0],
                                                                  "sampler": "euler"}}
    k = node_of(doc2, "Sampler")
    del doc2[k]["inputs"]["sigmas"]
    doc2[k]["inputs"]["schedule"] = ["51", 0]
    via = run(executor, doc2)
    assert direct.status == via.status == "success"
    assert torch.equal(direct.values[k][0]["samples"], via.values[k][0]["samples"])
