"""Start-up: node declarations should load without torch, numpy, PIL or diffusers (they load where a node runs).

The modules below already do. The model-family modules (conditioning, latents, sampling, types, model_store,
aliases, schedulers/*) still import torch at the top; until they move those imports, ``validate`` and
``nodes --json`` pay for torch, and there is no subprocess check of the whole command here yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "numpy", "PIL", "diffusers", "transformers", "safetensors", "scipy", "torchsde", "schedulers"}
LIGHT_MODULES = ["nodes/device.py", "nodes/preview.py", "nodes/images.py", "nodes/compare.py",
                 "nodes/sigma_nodes.py", "nodes/__init__.py", "graph_runtime/builtin_nodes.py"]


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported (imports under ``if TYPE_CHECKING`` left out)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("rel", LIGHT_MODULES)
def test_declaring_modules_import_nothing_heavy_at_the_top(rel):
    assert not top_level_imports(ROOT / rel) & HEAVY, rel
