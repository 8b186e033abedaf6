"""LoadImage takes ComfyUI's annotated file names: ``x.png [output]``, ``x.png [temp]``, ``x.png [input]`` (the
editor names previews and saved images this way when they are loaded again), each confined to its folder."""

from __future__ import annotations

import os

import pytest
from nodes_support import make_executor
from PIL import Image

from graph_runtime import WorkflowValidationError
from nodes.images import split_annotated_name


@pytest.fixture
def executor(tmp_path):
    ex = make_executor(tmp_path)
    for kind, colour in (("input", (255, 0, 0)), ("output", (0, 255, 0)), ("temp", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(ex.paths.folder(kind) / "pic.png")
    (ex.paths.output / "shots").mkdir()
    Image.new("RGB", (4, 4), (255, 255, 255)).save(ex.paths.output / "shots" / "cat 1.png")
    return ex


def load(name):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}}}


@pytest.mark.parametrize("name,channel", [("pic.png", 0), ("pic.png [input]", 0), ("pic.png [output]", 1),
                                          ("pic.png [temp]", 2)])
def test_each_annotation_reads_its_folder(executor, name, channel):
    image, _ = executor.run(load(name), targets=["1"]).values["1"]
    assert image.shape == (1, 8, 8, 3)
    assert image[0, 0, 0].tolist() == [1.0 if c == channel else 0.0 for c in range(3)]


def test_a_subfolder_and_spaces_in_the_name(executor):
    image, _ = executor.run(load("shots/cat 1.png [output]"), targets=["1"]).values["1"]
    assert image.shape == (1, 4, 4, 3)


@pytest.mark.parametrize("name", ["missing.png [output]", "../input/pic.png [output]", "pic.png [elsewhere]",
                                  "/etc/passwd [temp]"])
def test_names_that_do_not_resolve_are_refused_before_running(executor, name):
    with pytest.raises(WorkflowValidationError) as err:
        executor.run(load(name), targets=["1"])
    (entry,) = err.value.result.node_errors["1"]["errors"]
    assert entry["type"] == "value_not_in_list" and entry["extra_info"]["input_name"] == "image"


def test_the_cache_follows_the_annotated_file(executor):
    doc = load("pic.png [output]")
    assert executor.run(doc, targets=["1"]).executed == ["1"]
    assert executor.run(doc, targets=["1"]).cached == ["1"]
    target = executor.paths.output / "pic.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert executor.run(doc, targets=["1"]).executed == ["1"]


def test_split_annotated_name():
    assert split_annotated_name("a.png [output]") == ("output", "a.png")
    assert split_annotated_name("a.png[temp]") == ("temp", "a.png")
    assert split_annotated_name("a [b].png") == ("input", "a [b].png")
