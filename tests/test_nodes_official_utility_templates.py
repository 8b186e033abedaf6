"""Two of ComfyUI's official templates that use only these image nodes run here end to end, converted from
the editor format as shipped (PyPI comfyui-workflow-templates-json, pinned): utility_image_stitch (LoadImage x4,
ImageStitch x3, ResizeImageMaskNode, SaveImage) and utility_interpolation_image_upscale (ImageScaleBy lanczos,
SaveImage, ImageCompare). The inputs are small generated pictures under the templates' file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nodes_support import make_executor, make_registry
from PIL import Image

import nodes.images as images
from graph_runtime.ui_format import ui_to_api

REG = make_registry()


def template(name: str) -> dict:
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    return json.loads((Path(pkg.__file__).parent / "templates" / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def executor(tmp_path):
    ex = make_executor(tmp_path)
    images.set_input_folder(ex.paths.input)
    yield ex
    images.set_input_folder(None)


def picture(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    Image.new("RGB", size, colour).save(path)


def test_image_stitch_template(executor):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, colour in enumerate(colours, 1):
        picture(executor.paths.input / f"angle_{i}.png", (40 + 8 * i, 30), colour)
    api = ui_to_api(template("utility_image_stitch"), REG)
    result = executor.run(api)
    assert result.ok, result.error
    (saved,) = [o for o in result.outputs.values() if "images" in o]
    (entry,) = saved["images"]
    with Image.open(executor.paths.output / entry["subfolder"] / entry["filename"]) as png:
        assert png.size == (2048, 2048)  # the template's ResizeImageMaskNode: scale dimensions, centre crop
        arr = np.asarray(png.convert("RGB"))
    # two rows of two stitched pictures: red and green above, blue and yellow below
    assert tuple(arr[10, 5]) == (255, 0, 0) and tuple(arr[-10, -5]) == (255, 255, 0)


def test_interpolation_upscale_template(executor):
    picture(executor.paths.input / "pray.png", (24, 16), (10, 120, 200))
    api = ui_to_api(template("utility_interpolation_image_upscale"), REG)
    result = executor.run(api)
    assert result.ok, result.error
    saved = [o for o in result.outputs.values() if "images" in o]
    compare = [o for o in result.outputs.values() if "a_images" in o]
    assert len(saved) == 1 and len(compare) == 1
    entry = saved[0]["images"][0]
    with Image.open(executor.paths.output / entry["subfolder"] / entry["filename"]) as png:
        assert png.size == (48, 32)  # ImageScaleBy 2 with lanczos
        assert png.convert("RGB").getpixel((20, 10)) == (10, 120, 200)
    assert len(compare[0]["a_images"]) == 1 and len(compare[0]["b_images"]) == 1
