"""Start-up: declaring nodes loads no torch, numpy, PIL or diffusers (they load where a node runs), so
``graph-runtime validate`` and ``graph-runtime nodes --json`` start in a fraction of ``import torch``'s time.

Checked on the real commands in a fresh interpreter (what a user runs), and on the modules' top-level imports
(so a new heavy import at the top of a declaring module is caught with its file name).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "numpy", "PIL", "diffusers", "transformers", "safetensors", "scipy", "torchsde"}
#: every module imported to declare the built-in nodes (the model families and the sampling code are not)
DECLARING = ["nodes/__init__.py", "nodes/device.py", "nodes/preview.py", "nodes/images.py", "nodes/compare.py",
             "nodes/sigma_nodes.py", "nodes/aliases.py", "nodes/conditioning.py", "nodes/latents.py",
             "nodes/models.py", "nodes/model_store.py", "nodes/part_files.py", "nodes/loaders.py",
             "nodes/model_patches.py", "nodes/sampling.py", "nodes/types.py", "schedulers/__init__.py",
             "schedulers/registry.py", "schedulers/comfy_names.py", "graph_runtime/builtin_nodes.py", "nodes/utility.py",
             "nodes/image_ops.py", "nodes/latent_ops.py"]

PROBE = f"""
import json, sys
from graph_runtime.cli import main
sys.stdout = open("/dev/null", "w")
rc = main(sys.argv[1:])
sys.stdout = sys.__stdout__
print(json.dumps({{"rc": rc, "loaded": sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)}}))
"""


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported (imports under ``if TYPE_CHECKING`` left out)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("rel", DECLARING)
def test_declaring_modules_import_nothing_heavy_at_the_top(rel):
    assert not top_level_imports(ROOT / rel) & HEAVY, rel


@pytest.mark.parametrize("command", [["validate", "workflows/txt2img.json"], ["nodes", "--json"]])
def test_commands_that_only_read_declarations_load_no_torch(command):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, *command], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "loaded": []}, result


def test_the_registry_declares_what_the_classes_do():
    """The declared capabilities that spare node declarations a diffusers import match the classes."""
    from schedulers import kdiffusion, registry

    assert tuple(kdiffusion.RULES) == registry.STEP_RULES
    for name, entry in registry.REGISTRY.items():
        if entry.kind == "discrete":
            assert entry.custom_sigmas == registry.probe(name, "sigmas"), name


def test_a_run_prints_no_install_hints(tmp_path):
    """Loading models does not print diffusers' "pip install accelerate" advice (the loads say what they do)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "graph_runtime", "run", "workflows/txt2img.json", "--output-dir",
                          str(tmp_path), "--set", "5.steps=2"], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "accelerate" not in out.stdout + out.stderr
