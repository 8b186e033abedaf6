"""The diffusion workflows through the server with the embedded model: queued over HTTP, progress and latent
previews over the websocket, the image served by /view; a seed-only rerun reuses the model and the prompts;
a ComfyUI client from PyPI renders the classic ComfyUI API workflow (core node names).

The embedded model is part of the repository: without it these tests fail (they do not skip)."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import struct

import pytest
from test_web_support import (
    ROOT,
    collect_until_done,
    http,
    new_id,
    start_server,
    submit,
    wait_history,
    ws_connect,
)

EMBEDDED = ROOT / "models" / "tiny-shapes-sd"
TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
COMFY_TXT2IMG = json.loads((ROOT / "workflows" / "comfy_txt2img_api.json").read_text())
PREVIEW_IMAGE = 1  # binary websocket frame: 4-byte event type (1 = preview image), 4-byte format (1 = JPEG), data
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def require_embedded_model() -> None:
    if not (EMBEDDED / "model_index.json").is_file() or not any((EMBEDDED / "unet").glob("*.safetensors")):
        pytest.fail(f"the embedded model is missing: expected a diffusers folder at {EMBEDDED}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_embedded_model()
    srv = start_server(tmp_path_factory.mktemp("diffusion"))
    yield srv
    srv.stop()


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == PNG_MAGIC, data[:16]
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img.size


def run_over_ws(base: str, prompt: dict, **extra) -> tuple[str, list]:
    cid = new_id()
    with ws_connect(base, cid) as ws:
        pid = submit(base, prompt, cid, **extra)["prompt_id"]
        return pid, collect_until_done(ws, pid, timeout=300)


def of_prompt(msgs: list, kind: str, pid: str) -> list[dict]:
    return [d for k, d in msgs if k == kind and d.get("prompt_id") == pid]


@pytest.mark.slow
def test_txt2img_through_the_server_then_a_seed_only_rerun(server):
    base = server.url
    pid, msgs = run_over_ws(base, TXT2IMG)
    kinds = [k for k, _ in msgs]
    assert of_prompt(msgs, "execution_success", pid), kinds

    steps = TXT2IMG["5"]["inputs"]["steps"]
    progress = [d for d in of_prompt(msgs, "progress", pid) if d["node"] == "6"]
    assert progress, kinds
    assert (progress[-1]["value"], progress[-1]["max"]) == (steps, steps)
    assert [d["value"] for d in progress] == sorted(d["value"] for d in progress)

    frames = [m for k, m in msgs if k == "binary"]
    assert frames, "no latent preview was sent"
    event, fmt = struct.unpack(">II", frames[0][:8])
    assert (event, fmt) == (PREVIEW_IMAGE, 1) and frames[0][8:10] == b"\xff\xd8"  # a JPEG

    executed = {d["node"]: d["output"] for d in of_prompt(msgs, "executed", pid)}
    images = executed["8"]["images"]
    assert len(images) == 1 and images[0]["type"] == "output", executed
    img = images[0]
    r = http("GET", f"{base}/view?filename={img['filename']}&subfolder={img['subfolder']}&type={img['type']}")
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    assert png_size(r.body) == (64, 64)
    assert wait_history(base, pid)["outputs"]["8"]["images"] == images

    # the same graph with another seed: the model, the prompts, the latent and the schedule come from the cache;
    # the editor's "Live preview method: none" (sent in extra_data) turns the previews off
    again = copy.deepcopy(TXT2IMG)
    again["6"]["inputs"]["seed"] += 1
    pid2, msgs2 = run_over_ws(base, again, extra_data={"preview_method": "none"})
    assert not [m for k, m in msgs2 if k == "binary"] and of_prompt(msgs2, "progress", pid2)
    assert of_prompt(msgs2, "execution_success", pid2), [k for k, _ in msgs2]
    (cached,) = of_prompt(msgs2, "execution_cached", pid2)
    assert set(cached["nodes"]) == {"1", "2", "3", "4", "5"}
    ran = [d["node"] for d in of_prompt(msgs2, "executing", pid2) if d["node"] is not None]
    assert ran == ["6", "7", "8"]
    images2 = {d["node"]: d["output"] for d in of_prompt(msgs2, "executed", pid2)}["8"]["images"]
    assert images2[0]["filename"] != img["filename"]
    r2 = http("GET", f"{base}/view?filename={images2[0]['filename']}&type=output")
    assert png_size(r2.body) == (64, 64) and r2.body != r.body


@pytest.mark.slow
def test_comfy_client_renders_the_comfy_api_workflow(server):
    """comfy-api-simplified (PyPI) queues the ComfyUI-named workflow and fetches the image it made.

    Its queue_and_wait_images returns the websocket's binary frames when there are any (here: the latent
    previews), so the image is fetched the way that method does otherwise: history, then /view."""
    import comfy_api_simplified as api_mod

    api = api_mod.ComfyApiWrapper(server.url)
    info = api.get_object_info()
    assert {"CheckpointLoaderSimple", "KSampler", "CLIPTextEncode", "EmptyLatentImage"} <= set(info)
    wf = api_mod.ComfyWorkflowWrapper(copy.deepcopy(COMFY_TXT2IMG))
    wf.set_node_param("KSampler", "steps", 8)
    wf.set_node_param("Save Image", "filename_prefix", "client")
    prompt_id, previews = asyncio.run(api.queue_prompt_and_wait(wf))
    assert previews and all(p[:2] == b"\xff\xd8" for p in previews)  # JPEG latent previews
    outputs = api.get_history(prompt_id)[prompt_id]["outputs"]
    (image,) = outputs[wf.get_node_id("Save Image")]["images"]
    assert image["filename"].startswith("client") and image["type"] == "output"
    data = api.get_image(image["filename"], image["subfolder"], image["type"])
    assert png_size(data) == (64, 64)
    assert (server.config.paths.output / image["filename"]).read_bytes() == data
