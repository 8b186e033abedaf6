"""Shared fixtures of the built-in node tests: the embedded model folder (or, until it is trained, a
random-weight one of the same architecture family), and helpers to run workflows."""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest

# the fixtures; a test module takes them with ``from nodes_support import *``
__all__ = ["loaded", "model_folder", "models_dir", "services"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "models" / "tiny-shapes-sd"
SD15_TOKENIZER = ROOT / "models" / "configs" / "stable-diffusion-v1-5" / "tokenizer"


def has_embedded() -> bool:
    return (EMBEDDED / "model_index.json").is_file() and any((EMBEDDED / "unet").glob("*.safetensors"))


def build_random_model(folder: Path) -> Path:
    """A tiny Stable Diffusion folder with random weights (diffusers layout, safetensors)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=32))
    tokenizer = CLIPTokenizer.from_pretrained(str(SD15_TOKENIZER), local_files_only=True)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                              steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


@cache
def model_root() -> Path:
    """A models folder holding ``tiny-shapes-sd``: the repository's when the embedded model is there, else a
    temporary one with random weights (made once per test process)."""
    if has_embedded():
        return EMBEDDED.parent
    root = Path(tempfile.mkdtemp(prefix="graph-runtime-models-"))
    build_random_model(root / "tiny-shapes-sd")
    return root


@pytest.fixture(scope="session")
def models_dir() -> Path:
    root = model_root()
    if root == EMBEDDED.parent:
        yield root
        return
    before = os.environ.get("GRAPH_RUNTIME_MODELS")
    os.environ["GRAPH_RUNTIME_MODELS"] = str(root)
    yield root
    if before is None:
        os.environ.pop("GRAPH_RUNTIME_MODELS", None)
    else:
        os.environ["GRAPH_RUNTIME_MODELS"] = before
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def model_folder(models_dir: Path) -> Path:
    return models_dir / "tiny-shapes-sd"


@pytest.fixture(scope="session")
def services():
    """One Services (so one ModelStore) for the whole session: each model loads once."""
    from graph_runtime import Services

    return Services()


@pytest.fixture(scope="session")
def loaded(model_folder, services):
    """The embedded model, loaded on the CPU in fp32 through the shared store."""
    import torch

    from nodes.model_store import ModelStore

    return services.get(ModelStore).load(model_folder, device=torch.device("cpu"), dtype=torch.float32,
                                         name="tiny-shapes-sd")


def make_registry():
    import nodes
    from graph_runtime import default_registry

    reg = default_registry(with_entry_points=False)
    nodes.register(reg)
    return reg


def make_executor(tmp_path: Path, services=None, **kw):
    from graph_runtime import Executor, RuntimePaths

    paths = RuntimePaths(base=tmp_path, **kw)
    for p in (paths.input, paths.output, paths.temp):
        p.mkdir(parents=True, exist_ok=True)
    return Executor(make_registry(), paths=paths, services=services)


def context(tmp_path: Path, services=None, events: list | None = None):
    from graph_runtime import ExecutionContext, RuntimePaths

    paths = RuntimePaths(base=tmp_path)
    emit = (lambda e, d: events.append((e, d))) if events is not None else None
    return ExecutionContext.standalone(paths=paths, services=services, emit=emit)
