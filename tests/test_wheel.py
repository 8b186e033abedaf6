"""A wheel built from the repository, installed (not editable) in a fresh virtual environment, renders the
txt2img workflow from another directory: the embedded model, the SD1.5 configs and the tokenizers travel as
package data.

The fresh environment gets the project from the wheel alone; its dependencies (torch, diffusers, ...) are
reused from the environment running the tests through a .pth line, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "graph_runtime", "nodes", "schedulers", "web", "models")


@pytest.mark.slow
def test_wheel_installs_and_runs_txt2img_elsewhere(tmp_path):
    src = tmp_path / "src"  # a clean copy: the build writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, env=env, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("graph_runtime-*.whl")

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies of this environment, after the new environment's own site-packages
    deps = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    (purelib / "zz_reuse_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, env=env, timeout=300, capture_output=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import json, nodes, nodes.models as m; print(json.dumps("
                            "[nodes.__file__, str(m.SD15_CONFIG), m.list_models()]))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    nodes_file, sd15, models = json.loads(where.stdout)
    assert Path(nodes_file).is_relative_to(purelib), nodes_file  # the installed copy, not the source tree
    assert Path(sd15).is_relative_to(purelib) and (Path(sd15) / "unet" / "config.json").is_file()
    assert (Path(sd15) / "tokenizer" / "vocab.json").is_file()
    assert models[0] == "tiny-shapes-sd"

    shutil.copy2(ROOT / "workflows" / "txt2img.json", elsewhere / "txt2img.json")
    run = subprocess.run([str(target / "bin" / "graph-runtime"), "run", "txt2img.json", "--quiet",
                          "--set", "5.steps=4"], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "output" / "txt2img_00001_.png").is_file(), run.stdout
