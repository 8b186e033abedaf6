"""The family workflows of workflows/families/ (ComfyUI's loaders, nodes and file names for Flux.1 dev,
Z-Image Turbo and Qwen-Image) run from the command line on stand-ins written by `graph-runtime stand-ins`,
shrunk to 64x64 and 2 steps with --set: what a user does to test such a graph's wiring without its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILY_WORKFLOWS = sorted((ROOT / "workflows" / "families").glob("*.json"))


def cli(*args: str, models: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if models is not None:
        env["GRAPH_RUNTIME_MODELS"] = str(models)
    return subprocess.run([sys.executable, "-m", "graph_runtime", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def shrink(doc: dict) -> list[str]:
    """--set assignments that make every latent 64x64 and every sampler 2 steps."""
    sets = []
    for nid, node in doc.items():
        if node["class_type"] == "EmptySD3LatentImage":
            sets += [f"{nid}.width=64", f"{nid}.height=64"]
        if node["class_type"] == "KSampler":
            sets.append(f"{nid}.steps=2")
    return [arg for s in sets for arg in ("--set", s)]


def test_there_is_a_workflow_per_new_family():
    assert {p.stem for p in FAMILY_WORKFLOWS} == {"flux_dev", "z_image_turbo", "qwen_image"}


@pytest.mark.parametrize("path", FAMILY_WORKFLOWS, ids=lambda p: p.stem)
def test_family_workflow_runs_on_stand_ins(path, tmp_path):
    models = tmp_path / "models"
    made = cli("stand-ins", str(path), "--models-dir", str(models))
    assert made.returncode == 0, made.stdout + made.stderr
    doc = json.loads(path.read_text(encoding="utf-8"))
    for node in doc.values():  # every file the graph names is where its loader reads it
        for key in ("unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name"):
            if key in node["inputs"]:
                folder = {"unet_name": "diffusion_models", "vae_name": "vae"}.get(key, "text_encoders")
                assert (models / folder / node["inputs"][key]).is_file(), (folder, node["inputs"][key])
    ran = cli("run", str(path), *shrink(doc), "--output-dir", str(tmp_path / "out"), models=models)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    images = list((tmp_path / "out").glob("*.png"))
    assert len(images) == 1 and str(images[0]) in ran.stdout
