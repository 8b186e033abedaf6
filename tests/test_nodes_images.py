"""LoadImage, SaveImage, PreviewImage and the VAE round-trip workflow."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import ROOT, context, make_executor
from PIL import Image

import nodes.images as images
from graph_runtime import NodeError
from nodes.images import LoadImage, PreviewImage, SaveImage

PNG = ROOT / "tests" / "data" / "red_circle.png"


@pytest.fixture
def paths(tmp_path):
    ctx = context(tmp_path)
    for p in (ctx.paths.input, ctx.paths.output, ctx.paths.temp):
        p.mkdir(parents=True, exist_ok=True)
    images.set_input_folder(ctx.paths.input)
    yield ctx
    images.set_input_folder(None)


def test_save_image_writes_png_with_metadata(paths):
    prompt = {"1": {"class_type": "X", "inputs": {}}}
    extra = {"workflow": {"nodes": [], "links": []}, "note": "hi"}
    img = torch.rand(2, 16, 24, 3)
    res = SaveImage().execute(SaveImage.Inputs(images=img, filename_prefix="shots/cat", prompt=prompt,
                                               extra_pnginfo=extra), paths)
    assert res.ui == {"images": [
        {"filename": "cat_00001_.png", "subfolder": "shots", "type": "output"},
        {"filename": "cat_00002_.png", "subfolder": "shots", "type": "output"}]}
    f = paths.paths.output / "shots" / "cat_00001_.png"
    with Image.open(f) as png:
        assert png.size == (24, 16)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == extra["workflow"] and json.loads(png.text["note"]) == "hi"
        pixels = torch.from_numpy(np.array(png.convert("RGB"))).float() / 255
    assert (pixels - img[0]).abs().max() <= 0.5 / 255 + 1e-6  # rounded to 8 bits
    again = SaveImage().execute(SaveImage.Inputs(images=img[:1], filename_prefix="shots/cat"), paths)
    assert again.ui["images"][0]["filename"] == "cat_00003_.png"


@pytest.mark.parametrize("prefix", ["../x", "/abs", "..\\x", "C:\\x", "a/../../x", ""])
def test_save_image_refuses_path_tricks(paths, prefix):
    with pytest.raises(NodeError, match="filename_prefix"):
        SaveImage().execute(SaveImage.Inputs(images=torch.rand(1, 8, 8, 3), filename_prefix=prefix), paths)
    assert not any(paths.paths.output.parent.glob("x_*"))


def test_save_image_allows_dots_inside_names(paths):
    res = SaveImage().execute(SaveImage.Inputs(images=torch.rand(1, 8, 8, 3), filename_prefix="a..b"), paths)
    assert res.ui["images"][0] == {"filename": "a..b_00001_.png", "subfolder": "", "type": "output"}
    assert (paths.paths.output / "a..b_00001_.png").is_file()


def test_preview_image_goes_to_temp(paths):
    res = PreviewImage().execute(PreviewImage.Inputs(images=torch.rand(1, 8, 8, 3)), paths)
    (entry,) = res.ui["images"]
    assert entry["type"] == "temp" and (paths.paths.temp / entry["filename"]).is_file()


def test_load_image_and_mask(paths):
    shutil.copy(PNG, paths.paths.input / "pic.png")
    assert images.list_input_images() == ["pic.png"]
    image, mask = LoadImage().execute(LoadImage.Inputs(image="pic.png"), paths)
    assert image.shape == (1, 64, 64, 3) and mask.shape == (1, 64, 64)
    assert image[0, 32, 32, 0] > 0.8 and mask[0, 2, 2] == 1.0 and mask[0, 32, 32] == 0.0


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "..\\secret.png", "sub/../../x.png"])
def test_load_image_refuses_names_outside_input(paths, name):
    with pytest.raises(NodeError, match="image"):
        LoadImage().execute(LoadImage.Inputs(image=name), paths)


def test_load_image_reloads_when_the_file_changes(tmp_path):
    ex = make_executor(tmp_path)
    images.set_input_folder(ex.paths.input)
    try:
        target = ex.paths.input / "pic.png"
        Image.new("RGB", (8, 8), (255, 0, 0)).save(target)
        doc = {"1": {"class_type": "LoadImage", "inputs": {"image": "pic.png"}}}
        first = ex.run(doc, targets=["1"])
        assert first.executed == ["1"] and first.values["1"][0][0, 0, 0, 0] == 1.0
        assert ex.run(doc, targets=["1"]).cached == ["1"]
        Image.new("RGB", (8, 8), (0, 0, 255)).save(target)
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks
        third = ex.run(doc, targets=["1"])
        assert third.executed == ["1"] and third.values["1"][0][0, 0, 0, 2] == 1.0
    finally:
        images.set_input_folder(None)


def test_vae_roundtrip_workflow(models_dir, services, tmp_path):
    ex = make_executor(tmp_path, services=services)
    images.set_input_folder(ex.paths.input)
    try:
        shutil.copy(PNG, ex.paths.input / "red_circle.png")
        doc = json.loads((ROOT / "workflows" / "vae_roundtrip.json").read_text())
        result = ex.run(doc, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
        assert result.status == "success", result.error
        (entry,) = result.outputs["5"]["images"]
        assert entry == {"filename": "red_circle_00001_.png", "subfolder": "roundtrip", "type": "output"}
        out = Path(ex.paths.output) / "roundtrip" / entry["filename"]
        with Image.open(out) as png:
            assert png.size == (64, 64) and "workflow" in png.text and "prompt" in png.text
    finally:
        images.set_input_folder(None)


def test_load_image_lists_the_servers_input_folder(tmp_path):
    """serve --input-dir elsewhere: the editor's LoadImage list and validation read that folder, not ./input
    of the working directory."""
    from test_web_support import http

    from graph_runtime import RuntimePaths
    from web.app import BackgroundServer
    from web.config import ServerConfig

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8), "red").save(elsewhere / "only-here.png")
    config = ServerConfig(host="127.0.0.1", port=0, paths=RuntimePaths(base=tmp_path / "run", input=elsewhere),
                          node_modules=("nodes",))
    server = BackgroundServer(config).start()
    try:
        info = http("GET", f"{server.url}/object_info/LoadImage").json()
        assert "only-here.png" in info["LoadImage"]["input"]["required"]["image"][0]
    finally:
        server.stop()
