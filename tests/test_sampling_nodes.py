"""Scheduler and Sampler nodes run by the Executor on the embedded model: caching, events, errors."""

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from sampling_support import *  # noqa: F403
from sampling_support import img2img, node_of, txt2img
from tiny_sd import single_thread

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("nodes"), services=services)


def run(executor, doc, **kw):
    with single_thread():
        return executor.run(doc, **kw)


def test_seed_only_change_reruns_sampler_decode_save(executor):
    doc = txt2img("dpmpp_2m", steps=3, seed=1)
    first = run(executor, doc)
    assert first.status == "success", first.error
    doc[node_of(doc, "Sampler")]["inputs"]["seed"] = 2
    second = run(executor, doc)
    assert second.status == "success", second.error
    rerun = {node_of(doc, t) for t in ("Sampler", "VAEDecode", "SaveImage")}
    assert set(second.executed) == rerun
    for nid, spec in doc.items():
        if nid not in rerun:
            assert nid in second.cached, spec["class_type"]
    a = first.values[node_of(doc, "VAEDecode")][0]
    b = second.values[node_of(doc, "VAEDecode")][0]
    assert (a - b).abs().max() > 0.01


def test_progress_and_previews(executor):
    doc = txt2img("euler", steps=3, seed=5)
    events = []
    res = run(executor, doc, handlers=[lambda e, d: events.append((e, d))])
    assert res.status == "success", res.error
    sampler = node_of(doc, "Sampler")
    progress = [d for e, d in events if e == "progress" and d["node"] == sampler]
    assert [(p["value"], p["max"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    previews = [d for e, d in events if e == "preview" and d["node"] == sampler]
    assert previews and previews[-1]["image"][:2] == b"\xff\xd8"


def test_cfg_one_needs_no_negative(executor):
    doc = txt2img("euler", steps=2, cfg=1.0)
    del doc[node_of(doc, "Sampler")]["inputs"]["negative"]
    res = run(executor, doc)
    assert res.status == "success", res.error


def test_cfg_above_one_without_negative_is_a_clear_error(executor):
    doc = txt2img("euler", steps=2, cfg=5.0)
    del doc[node_of(doc, "Sampler")]["inputs"]["negative"]
    res = run(executor, doc)
    assert res.status == "error"
    assert "negative" in res.error["exception_message"] and "cfg" in res.error["exception_message"]
    assert res.error["node_id"] == node_of(doc, "Sampler")


@pytest.mark.parametrize("inputs, words", [
    ({"config_overrides": '{"solver_ordr": 3}'}, ["config_overrides", "solver_ordr", "solver_order"]),
    ({"config_overrides": "[1, 2]"}, ["config_overrides", "JSON object"]),
    ({"config_overrides": "{bad"}, ["config_overrides", "JSON"]),
    ({"scheduler": "ddim", "sigma_spacing": "karras"}, ["sigma_spacing", "ddim", "karras"]),
    ({"scheduler": "lms", "denoise": 0.0}, ["denoise"]),
])
def test_scheduler_errors_name_the_input(executor, inputs, words):
    doc = txt2img("dpmpp_2m", steps=3)
    doc[node_of(doc, "Scheduler")]["inputs"].update(inputs)
    res = run(executor, doc)
    assert res.status == "error"
    msg = res.error["exception_message"]
    for w in words:
        assert w in msg, msg
    assert res.error["node_id"] == node_of(doc, "Scheduler")


def test_scheduler_outputs_and_overrides(executor):
    doc = txt2img("dpmpp_2m", steps=6, sigma_spacing="karras", timestep_spacing="trailing",
                  config_overrides='{"solver_order": 3}')
    res = run(executor, doc)
    assert res.status == "success", res.error
    schedule, sigmas, timesteps = res.values[node_of(doc, "Scheduler")]
    assert schedule.overrides["solver_order"] == 3 and schedule.overrides["use_karras_sigmas"]
    assert sigmas.ndim == 1 and len(sigmas) == 7 and sigmas[-1] == 0
    assert len(timesteps) == 6


def test_interrupt_stops_sampling(executor):
    doc = txt2img("euler", steps=50, seed=9)
    sampler = node_of(doc, "Sampler")

    def handler(event, data):
        if event == "progress" and data["node"] == sampler and data["value"] == 2:
            executor.interrupt()

    res = run(executor, doc, handlers=[handler])
    assert res.status == "interrupted"


def test_img2img_workflow(executor, start_image):
    doc = img2img(steps=6)
    res = run(executor, doc)
    assert res.status == "success", res.error
    assert res.outputs[node_of(doc, "SaveImage")]["images"][0]["filename"].startswith("img2img")
    encoded = res.values[node_of(doc, "VAEEncode")][0]["samples"]
    out = res.values[node_of(doc, "Sampler")][0]["samples"]
    assert out.shape == encoded.shape and torch.isfinite(out).all()
    # a light denoise stays closer to the start picture than sampling from pure noise (denoise 1)
    near = run(executor, img2img(steps=10, denoise=0.3)).values[node_of(doc, "Sampler")][0]["samples"]
    far = run(executor, img2img(steps=10, denoise=1.0)).values[node_of(doc, "Sampler")][0]["samples"]
    assert (near - encoded).abs().mean() < (far - encoded).abs().mean()


def test_the_sampler_choice_says_when_a_schedule_overrides_it(tmp_path, models_dir, services):
    """With a schedule connected, the Sampler's sampler combo is not used: the run says so (a warning that the
    editor's log and the CLI show), and the picture is the schedule's."""
    from nodes_support import make_executor
    from sampling_support import node_of, txt2img

    from graph_runtime import events

    executor = make_executor(tmp_path, services=services)
    doc = txt2img("euler", steps=2)
    base = executor.run(doc)
    doc[node_of(doc, "Sampler")]["inputs"]["sampler"] = "heun"
    seen = []
    res = executor.run(doc, handlers=[lambda e, d: seen.append((e, d))])
    warnings = [d["message"] for e, d in seen if e == events.LOG and d.get("level") == "warning"]
    assert any("sampler: heun is not used" in w and "runs euler" in w for w in warnings), warnings
    out = node_of(doc, "VAEDecode")
    assert torch.equal(res.values[out][0], base.values[out][0])
