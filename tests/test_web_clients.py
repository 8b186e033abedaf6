"""Existing ComfyUI API clients from PyPI run workflows end to end against our server.

comfy-api-simplified==1.6.0 (requests + websockets) and comfy-script[client]==0.6.1 (aiohttp; it patches
asyncio on import, so it runs in its own process). comfyui-api-client 0.1.0 is not used: it cannot be
imported (it imports a top-level module ``api`` that its wheel does not ship).
"""

from __future__ import annotations

import asyncio
import copy
import io
import subprocess
import sys
import textwrap

import pytest
from test_web_support import ARITHMETIC, ROOT, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("clients"))
    yield srv
    srv.stop()


def titled(prompt: dict) -> dict:
    out = copy.deepcopy(prompt)
    for nid, node in out.items():
        node.setdefault("_meta", {"title": f"{node['class_type']} {nid}"})
    return out


def test_comfy_api_simplified(server, tmp_path):
    import comfy_api_simplified as api_mod
    api = api_mod.ComfyApiWrapper(server.url)
    assert "IntMath" in api.get_object_info()
    assert api.get_system_stats()["system"]["ram_total"] > 0

    wf = api_mod.ComfyWorkflowWrapper(titled(ARITHMETIC))
    wf.set_node_param("Width in tiles", "value", 9)
    prompt_id, previews = asyncio.run(api.queue_prompt_and_wait(wf))
    assert previews == []
    history = api.get_history(prompt_id)[prompt_id]
    assert history["outputs"]["6"]["text"] == ["6 x 7 = 63 tiles"]
    assert api.get_image("tiles.txt", "", "output") == b"6 x 7 = 63 tiles"

    # images come back through history + /view
    images = api.queue_and_wait_images({"1": {"class_type": "SaveTestImage", "inputs": {"red": 200},
                                              "_meta": {"title": "Save"}}}, "Save")
    from PIL import Image

    (name, data), = images.items()
    assert name == "test_200.png" and Image.open(io.BytesIO(data)).getpixel((0, 0)) == (200, 0, 0)

    png = tmp_path / "upload me.png"
    Image.new("RGB", (4, 4)).save(png)
    assert api.upload_image(png, subfolder="clients") == {"name": "upload me.png", "subfolder": "clients",
                                                          "type": "input"}
    assert (server.config.paths.input / "clients" / "upload me.png").exists()
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}


def test_comfy_script(server, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        from comfy_script.runtime import load, Workflow
        load({server.url + "/"!r}, watch=True)
        from comfy_script.runtime.nodes import *

        with Workflow(wait=True):
            tiles = IntMath(PrimitiveInt(8), PrimitiveInt(7), 'multiply')
            text = StringFormat('{{a}} x {{b}} = {{c}} tiles', '8', '7', ToString(tiles))
            ShowValue(text)
            SaveText(text, 'script.txt')
        print("finished", flush=True)
        import os
        os._exit(0)  # its queue watcher thread would keep the process alive
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished" in proc.stdout
    assert (server.config.paths.output / "script.txt").read_text() == "8 x 7 = 56 tiles"
