"""The diffusion txt2img workflow through the server: queued, run with the embedded model, image viewable."""

from __future__ import annotations

import io
import json

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

from graph_runtime import default_registry

TXT2IMG = ROOT / "workflows" / "txt2img.json"


def txt2img_or_skip() -> dict:
    if not TXT2IMG.exists():
        pytest.skip("workflows/txt2img.json does not exist yet")
    doc = json.loads(TXT2IMG.read_text())
    doc = doc.get("prompt", doc)
    registry = default_registry()
    missing = sorted({n["class_type"] for n in doc.values() if registry.get(n["class_type"]) is None})
    if missing:
        pytest.skip(f"diffusion nodes not registered yet: {', '.join(missing)}")
    return doc


@pytest.mark.slow
def test_txt2img_through_the_server(tmp_path):
    prompt = txt2img_or_skip()
    srv = start_server(tmp_path)
    try:
        cid = new_id()
        with ws_connect(srv.url, cid) as ws:
            pid = submit(srv.url, prompt, cid)["prompt_id"]
            msgs = collect_until_done(ws, pid, timeout=600)
        kinds = [k for k, _ in msgs]
        assert "execution_success" in kinds and "progress" in kinds, kinds
        entry = wait_history(srv.url, pid)
        images = [img for ui in entry["outputs"].values() for img in ui.get("images", [])]
        assert images, entry["outputs"]
        img = images[0]
        r = http("GET", f"{srv.url}/view?filename={img['filename']}&subfolder={img['subfolder']}&type={img['type']}")
        assert r.status == 200 and r.body[:8] == b"\x89PNG\r\n\x1a\n"
        from PIL import Image

        assert Image.open(io.BytesIO(r.body)).size[0] > 0
    finally:
        srv.stop()
