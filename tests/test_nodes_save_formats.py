"""SaveAnimatedWEBP (an animated WEBP in the output folder, ComfyUI's EXIF metadata and UI result) and
SaveImageWebsocket (each image as a PNG binary frame on a real server's websocket, as previews are sent)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from nodes_support import context
from PIL import Image, ImageSequence
from test_web_support import collect_until_done, new_id, start_server, submit, ws_connect

from graph_runtime import NodeError
from nodes.images import SaveAnimatedWEBP, SaveImage


@pytest.fixture
def ctx(tmp_path):
    c = context(tmp_path)
    c.paths.output.mkdir(parents=True, exist_ok=True)
    return c


def frames_of(path):
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)], im.info, im.getexif()


def test_animated_webp_frames_timing_and_ui(ctx):
    images = torch.zeros(3, 16, 24, 3)
    for i in range(3):
        images[i, :, :, i] = 1.0  # red, green, blue frames
    prompt = {"1": {"class_type": "X", "inputs": {}}}
    res = SaveAnimatedWEBP().execute(SaveAnimatedWEBP.Inputs(images=images, filename_prefix="anim/clip", fps=4.0,
                                                             prompt=prompt, extra_pnginfo={"workflow": {"n": 1}}),
                                     ctx)
    assert res.ui == {"images": [{"filename": "clip_00001_.webp", "subfolder": "anim", "type": "output"}],
                      "animated": [True]}
    assert res.outputs == (images,)
    frames, info, exif = frames_of(ctx.paths.output / "anim" / "clip_00001_.webp")
    assert len(frames) == 3 and info["duration"] == 250  # int(1000 / fps) ms per frame
    for i, f in enumerate(frames):  # lossless by default
        assert f.shape == (16, 24, 3) and np.array_equal(f, (images[i].numpy() * 255).astype(np.uint8))
    assert exif[0x0110] == "prompt:" + json.dumps(prompt)  # ImageDescription, as ComfyUI writes it
    assert exif[0x010F] == 'workflow:{"n": 1}'  # Make, then the tags below it for further items
    again = SaveAnimatedWEBP().execute(SaveAnimatedWEBP.Inputs(images=images[:1], filename_prefix="anim/clip",
                                                               lossless=False, quality=50, method="fastest"), ctx)
    assert again.ui["images"][0]["filename"] == "clip_00002_.webp"


def test_counters_are_shared_across_formats(ctx):
    """ComfyUI counts every file of a prefix, whatever its extension, so a PNG after a WEBP takes the next
    number."""
    SaveAnimatedWEBP().execute(SaveAnimatedWEBP.Inputs(images=torch.rand(2, 8, 8, 3), filename_prefix="mix"), ctx)
    res = SaveImage().execute(SaveImage.Inputs(images=torch.rand(1, 8, 8, 3), filename_prefix="mix"), ctx)
    assert res.ui["images"][0]["filename"] == "mix_00002_.png"


def test_animated_webp_declaration_and_errors(ctx):
    from nodes_support import make_registry

    d = make_registry().get("SaveAnimatedWEBP").describe()
    assert d["input_order"]["required"] == ["images", "filename_prefix", "fps", "lossless", "quality", "method"]
    req = d["input"]["required"]
    assert req["fps"][1] == {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}
    assert req["method"][0] == ["default", "fastest", "slowest"] and req["lossless"][1] == {"default": True}
    assert d["output_node"] is True and d["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert d["output"] == ["IMAGE"] and d["output_name"] == ["images"] and d["display_name"] == "Save Animated WEBP"
    with pytest.raises(NodeError, match="filename_prefix"):
        SaveAnimatedWEBP().execute(SaveAnimatedWEBP.Inputs(images=torch.rand(1, 8, 8, 3), filename_prefix="../x"),
                                   ctx)
    with pytest.raises(NodeError, match="images: expected an IMAGE tensor"):
        SaveAnimatedWEBP().execute(SaveAnimatedWEBP.Inputs(images={"samples": 1}), ctx)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


def websocket_images(server, announce_metadata: bool):
    cid = new_id()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 2,
                                                           "color": 0x10C0F0}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    with ws_connect(server.url, cid) as ws:
        if announce_metadata:
            assert json.loads(ws.recv(timeout=5))["type"] == "status"
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        pid = submit(server.url, prompt, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    return pid, msgs


def test_save_image_websocket_sends_png_frames(server):
    pid, msgs = websocket_images(server, announce_metadata=False)
    frames = [d for k, d in msgs if k == "binary"]
    assert len(frames) == 2
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)  # a preview image, PNG (ComfyUI's header)
        with Image.open(io.BytesIO(frame[8:])) as png:
            assert png.format == "PNG" and png.size == (6, 4)
            assert np.asarray(png.convert("RGB"))[0, 0].tolist() == [0x10, 0xC0, 0xF0]
    assert not [d for k, d in msgs if k == "executed" and d.get("node") == "2" and d.get("output")]  # no files
    progress = [(d["value"], d["max"]) for k, d in msgs if k == "progress" and d.get("node") == "2"]
    assert progress == [(1, 2), (2, 2)]


def test_save_image_websocket_with_metadata_and_never_cached(server):
    for _ in range(2):  # the same prompt twice: the node runs (and sends) both times
        pid, msgs = websocket_images(server, announce_metadata=True)
        frames = [d for k, d in msgs if k == "binary"]
        assert len(frames) == 2
        event, length = struct.unpack(">II", frames[0][:8])
        meta = json.loads(frames[0][8:8 + length])
        assert event == 4 and meta["node_id"] == "2" and meta["prompt_id"] == pid
        assert meta["image_type"] == "image/png" and frames[0][8 + length:8 + length + 4] == b"\x89PNG"


def test_image_compare_previews_both_sides(tmp_path):
    from nodes_support import make_executor, make_registry

    d = make_registry().get("ImageCompare").describe()
    assert d["input"]["required"] == {"compare_view": ["IMAGECOMPARE"]}
    assert d["input_order"]["optional"] == ["image_a", "image_b"] and d["output_node"] is True
    doc = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0xFF0000}},
           "2": {"class_type": "ImageCompare", "inputs": {"image_a": ["1", 0],
                                                          "compare_view": {"__value__": ["", ""]}}}}
    ex = make_executor(tmp_path)
    result = ex.run(doc)
    assert result.ok, result.error
    ui = result.outputs["2"]
    assert ui["b_images"] == [] and [i["type"] for i in ui["a_images"]] == ["temp", "temp"]
    assert all(i["filename"].startswith("graph-runtime.compare.a_temp_") for i in ui["a_images"])
    with Image.open(ex.paths.temp / ui["a_images"][1]["filename"]) as png:
        assert png.size == (8, 8) and png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    # what the editor sends as the slider's state is taken and does not change the result's cache key
    doc["2"]["inputs"]["compare_view"] = {"before": "/api/view?filename=x.png", "after": ""}
    again = ex.run(doc)
    assert again.ok and "2" not in again.executed
    del doc["2"]["inputs"]["compare_view"]
    assert ex.run(doc).ok


def test_animated_png(ctx):
    from nodes.images import SaveAnimatedPNG

    images = torch.zeros(2, 6, 8, 3)
    images[1] = 1.0
    prompt = {"1": {"class_type": "X", "inputs": {}}}
    res = SaveAnimatedPNG().execute(SaveAnimatedPNG.Inputs(images=images, filename_prefix="apng", fps=10.0,
                                                           prompt=prompt, extra_pnginfo={"workflow": {"n": 2}}),
                                    ctx)
    assert res.ui == {"images": [{"filename": "apng_00001_.png", "subfolder": "", "type": "output"}],
                      "animated": [True]}
    assert res.outputs == (images,)
    path = ctx.paths.output / "apng_00001_.png"
    frames, info, _ = frames_of(path)
    assert len(frames) == 2 and info["duration"] == 100
    assert frames[0].max() == 0 and frames[1].min() == 255
    raw = path.read_bytes()
    idat = raw.index(b"IDAT")
    assert raw.index(b"comfprompt\0") > idat and raw.index(b"comfworkflow\0" + b'{"n": 2}') > idat


def test_websocket_images_are_not_skipped_like_previews():
    """A client whose outbox is full skips a sampling preview, but a SaveImageWebsocket image ("image" kind)
    takes a preview's place, or, where only messages that must arrive are queued, the client is dropped as
    too slow (as for any JSON message) rather than losing the image unseen."""
    from web.hub import Client

    c = Client("sid", ws=None, cap=3)
    assert c.offer("json", "a") and c.offer("preview", b"p1") and c.offer("json", "b")
    assert c.offer("preview", b"p2") and c.dropped == 1  # skipped
    assert c.offer("image", b"img") and [k for k, _ in c.outbox] == ["json", "json", "image"]
    assert c.dropped == 2  # the old preview made room
    assert c.offer("image", b"img2") is False  # nothing left to skip: the client is behind


def test_get_image_size_shows_the_size_on_the_node(server):
    """ComfyUI's progress text: a binary frame of type 3 with the node id and the text the editor shows."""
    cid = new_id()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 3, "color": 0}},
              "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    with ws_connect(server.url, cid) as ws:
        pid = submit(server.url, prompt, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    (frame,) = [d for k, d in msgs if k == "binary"]
    kind, length = struct.unpack(">II", frame[:8])
    assert kind == 3 and frame[8:8 + length] == b"2"
    assert frame[8 + length:].decode() == "width: 6, height: 4\n batch size: 3"
