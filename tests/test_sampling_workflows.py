"""The shipped sampling workflows run on the embedded model (fast settings), the scheduler comparison grid,
and the ``graph-runtime schedulers`` command."""

import copy
import json

import pytest
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from PIL import Image
from sampling_support import ROOT, node_of, workflow
from tiny_sd import single_thread

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("workflows"), services=services)


@pytest.mark.parametrize("name", ["txt2img.json", "img2img.json", "custom_sigmas.json", "compare_schedulers.json",
                                  "comfy_txt2img_api.json"])
def test_shipped_workflows_validate(executor, name):
    from nodes import images

    images.set_input_folder(executor.paths.input)
    (executor.paths.input / "red_circle.png").write_bytes(b"")  # LoadImage lists the input folder
    try:
        result = executor.validate(workflow(name))
    finally:
        images.set_input_folder(None)
    assert result.ok, result.messages()


def test_txt2img_workflow_defaults(executor):
    doc = workflow("txt2img.json")
    s, k = doc[node_of(doc, "Scheduler")]["inputs"], doc[node_of(doc, "Sampler")]["inputs"]
    assert (s["scheduler"], s["steps"]) == ("dpmpp_2m", 20)
    assert doc[node_of(doc, "SaveImage")]["inputs"]["filename_prefix"] == "txt2img"
    assert 1 < k["cfg"] <= 10


def test_compare_schedulers_grid(executor):
    doc = copy.deepcopy(workflow("compare_schedulers.json"))
    node = node_of(doc, "CompareSchedulers")
    doc[node]["inputs"].update(schedulers="euler, dpmpp_2m,heun", steps="2,3", filename_prefix="cmp/grid")
    events = []
    with single_thread():
        res = executor.run(doc, handlers=[lambda e, d: events.append((e, d))])
    assert res.status == "success", res.error
    ui = res.outputs[node]
    png = executor.paths.output / ui["images"][0]["subfolder"] / ui["images"][0]["filename"]
    grid = Image.open(png)
    assert grid.width > 2 * 128 and grid.height > 3 * 128
    md = png.with_suffix(".md").read_text()
    csv = png.with_suffix(".csv").read_text().splitlines()
    assert "| Heun | 3 |" in md and len(csv) == 1 + 6 and csv[0] == "scheduler,label,steps,seconds"
    progress = [d["value"] for e, d in events if e == "progress" and d["node"] == node]
    assert progress[-1] == 3 * (2 + 3) and progress == sorted(progress)
    assert res.values[node][0].shape == (1, grid.height, grid.width, 3)


@pytest.mark.parametrize("inputs, words", [
    ({"schedulers": "euler,warp_drive"}, ["schedulers", "warp_drive"]),
    ({"steps": "5,ten"}, ["steps", "ten"]),
    ({"steps": "0"}, ["steps", "1..1000"]),
])
def test_compare_schedulers_errors(executor, inputs, words):
    doc = copy.deepcopy(workflow("compare_schedulers.json"))
    doc[node_of(doc, "CompareSchedulers")]["inputs"].update(inputs)
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error"
    for w in words:
        assert w in res.error["exception_message"]


def test_schedulers_command(models_dir, capsys):
    from graph_runtime.cli import main
    from schedulers import registry

    assert main(["schedulers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "tiny-shapes-sd" and data["model_scheduler"] == "PNDMScheduler"
    rows = {r["name"]: r for r in data["schedulers"]}
    assert list(rows) == registry.names()
    assert rows["euler"]["accepts_sigmas"] and rows["dpmpp_2m"]["compatible"]
    assert "karras" in rows["dpmpp_2m"]["sigma_spacings"] and rows["euler_ancestral"]["stochastic"]
    assert main(["schedulers"]) == 0
    out = capsys.readouterr().out
    assert "DPMSolverMultistepScheduler" in out and "compatible" in out
    assert main(["schedulers", "--model", "no-such-model"]) == 2


def test_gpu_check_dry_run(capsys):
    """bench/gpu_check.py end to end on a tiny random model on the CPU (the GPU run uses the same code)."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    with single_thread():
        assert gpu_check.main(["--dry-run", "--steps", "2", "--repeats", "1", "--schedulers", "euler"]) == 0
    out = capsys.readouterr().out
    assert "| euler | 2 |" in out and "| 0 |" in out
