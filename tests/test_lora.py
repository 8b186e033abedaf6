"""LoraLoader / LoraLoaderModelOnly on the embedded model (and tiny SDXL): a LoRA made for the model (random
low-rank weights, saved in kohya's, peft's and ComfyUI's layouts) changes the image exactly as diffusers'
pipeline with ``load_lora_weights`` does; the base branch of the same graph, and the base graph after the LoRA
is gone, give the base image bit for bit; bad files are refused naming lora_name."""

from __future__ import annotations

import copy
import gc
import re

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from safetensors.torch import save_file
from sampling_support import PROMPT, txt2img
from tiny_sd import single_thread

from nodes.checkpoint import unet_key_to_ldm
from nodes.stand_ins.lora_files import (
    ALPHA,
    RANK,
    TE_LAYERS,
    kohya,
    linears,
    low_rank,
    peft_layout,
    sgm_names,
)
from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
    "ignore:Already found a `peft_config` attribute:UserWarning",  # the reference pipeline with two adapters
)

SEED, STEPS, CFG = 5, 3, 6.0


def comfy_layout(unet_weights: dict, te_weights: dict, unet, ldm_kohya: bool = False) -> dict:
    """ComfyUI's layout: ``diffusion_model.<original UNet name>`` (or kohya names over original names) and
    ``text_encoders.clip_l.transformer.<module>``, with kohya's suffixes."""
    keys = list(unet.state_dict())
    with_attn = {int(m[1]) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for name, (down, up) in unet_weights.items():
        ldm = unet_key_to_ldm(name + ".weight", unet.config.layers_per_block, with_attn)[: -len(".weight")]
        k = "lora_unet_" + ldm.replace(".", "_") if ldm_kohya else "diffusion_model." + ldm
        out |= {f"{k}.lora_up.weight": up, f"{k}.lora_down.weight": down, f"{k}.alpha": torch.tensor(ALPHA)}
    for name, (down, up) in te_weights.items():
        k = "text_encoders.clip_l.transformer." + name
        out |= {f"{k}.lora_up.weight": up, f"{k}.lora_down.weight": down, f"{k}.alpha": torch.tensor(ALPHA)}
    return out


@pytest.fixture(scope="module")
def pipe(model_folder):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(model_folder, safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    entry = registry.get("euler")
    p.scheduler = entry.cls.from_config(p.scheduler.config, **entry.overrides)
    return p


@pytest.fixture(scope="module")
def loras(tmp_path_factory, pipe):
    """A models folder whose loras/ holds the same LoRA in each layout, and its weights."""
    root = tmp_path_factory.mktemp("lora_models")
    folder = root / "loras"
    folder.mkdir()
    unet_w = low_rank(linears(pipe.unet, lambda n: ".attentions." in n), 1)
    te_w = low_rank(linears(pipe.text_encoder, lambda n: bool(TE_LAYERS.search(n))), 2)
    files = {
        "kohya.safetensors": kohya({"lora_unet_": unet_w, "lora_te_": te_w}),
        "peft.safetensors": peft_layout({"unet": unet_w, "text_encoder": te_w}),
        "comfy.safetensors": comfy_layout(unet_w, te_w, pipe.unet),
        "comfy_kohya_ldm.safetensors": comfy_layout(unet_w, te_w, pipe.unet, ldm_kohya=True),
        "unet_only.safetensors": kohya({"lora_unet_": unet_w}),
        # a LoRA for a wider model: layers of the same names, other sizes
        "other_family.safetensors": kohya({"lora_unet_": {n: (torch.zeros(RANK, 320), torch.zeros(320, RANK))
                                                           for n in list(unet_w)[:4]}}),
        # layers the tiny model does not have at all
        "missing_layers.safetensors": kohya({"lora_unet_": {
            "down_blocks.3.attentions.0.transformer_blocks.5.attn1.to_q": (torch.zeros(RANK, 64),
                                                                          torch.zeros(64, RANK))}}),
        "second_text_encoder.safetensors": kohya({"lora_unet_": unet_w, "lora_te2_": te_w}),  # SDXL's te2
        "not_a_lora.safetensors": {k: v.clone() for k, v in list(pipe.unet.state_dict().items())[:8]},
        "dora.safetensors": kohya({"lora_unet_": unet_w}) | {
            f"lora_unet_{n.replace('.', '_')}.dora_scale": torch.ones(1, m.out_features)
            for n, m in list(linears(pipe.unet, lambda n: ".attentions." in n).items())[:2]},
    }
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, folder / name)
    (folder / "pickled.pt").write_bytes(b"not loaded")
    return root


@pytest.fixture(scope="module")
def executor(tmp_path_factory, loras, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("lora_run"), services=services, models=[loras])


def with_lora(name: str, strength_model: float = 1.0, strength_clip: float = 1.0, model_only: bool = False) -> dict:
    """txt2img with a LoRA node between the model and everything that uses it."""
    doc = txt2img("euler", steps=STEPS, seed=SEED, cfg=CFG)
    if model_only:
        doc["20"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": ["1", 0], "lora_name": name, "strength_model": strength_model}}
    else:
        doc["20"] = {"class_type": "LoraLoader",
                     "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": name,
                                "strength_model": strength_model, "strength_clip": strength_clip}}
        for nid in ("2", "3"):
            doc[nid]["inputs"]["clip"] = ["20", 1]
    for nid in ("5", "6"):
        doc[nid]["inputs"]["model"] = ["20", 0]
    return doc


def run(executor, doc, node: str = "7") -> torch.Tensor:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error and res.error.get("exception_message")
    return res.values[node][0]


def fails(executor, doc) -> str:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error"
    return res.error["exception_message"]


def pipeline_image(pipe, path, weights: dict | None = None) -> torch.Tensor:
    pipe.load_lora_weights(str(path), adapter_name="reference")
    try:
        if weights is not None:
            pipe.set_adapters(["reference"], adapter_weights=[weights])
        with single_thread():
            out = pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    finally:
        pipe.unload_lora_weights()
    return out.permute(0, 2, 3, 1).float()


@pytest.fixture(scope="module")
def base(executor):
    return run(executor, txt2img("euler", steps=STEPS, seed=SEED, cfg=CFG))


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_lora_matches_diffusers_load_lora_weights(executor, pipe, loras, base, layout):
    ours = run(executor, with_lora(f"{layout}.safetensors"))
    ref = pipeline_image(pipe, loras / "loras" / f"{layout}.safetensors")
    assert (ours - base).abs().max().item() > 0.05  # the LoRA changes the image
    assert (ours - ref).abs().max().item() == 0.0


def test_strengths_match_diffusers_set_adapters(executor, pipe, loras):
    ours = run(executor, with_lora("kohya.safetensors", strength_model=0.6, strength_clip=-0.4))
    ref = pipeline_image(pipe, loras / "loras" / "kohya.safetensors", {"unet": 0.6, "text_encoder": -0.4})
    assert (ours - ref).abs().max().item() == 0.0


def test_model_only_leaves_the_text_encoder(executor, pipe, loras):
    ours = run(executor, with_lora("kohya.safetensors", model_only=True))
    ref = pipeline_image(pipe, loras / "loras" / "unet_only.safetensors")
    assert (ours - ref).abs().max().item() == 0.0


@pytest.mark.parametrize("layout", ["comfy", "comfy_kohya_ldm"])
def test_comfyui_layouts_equal_kohya(executor, layout):
    kohya_image = run(executor, with_lora("kohya.safetensors", 0.8, 1.2))
    assert (run(executor, with_lora(f"{layout}.safetensors", 0.8, 1.2)) - kohya_image).abs().max().item() == 0.0


def test_base_branch_unchanged_and_restored(executor, loras, base, services):
    from nodes.lora import adapter_names
    from nodes.model_store import ModelStore

    doc = with_lora("kohya.safetensors")
    both = copy.deepcopy(doc)  # plus a base branch: the base model and CLIP straight from LoadModel
    both |= {"12": {"class_type": "TextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
             "13": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
             "15": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": "euler", "steps": STEPS}},
             "16": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["12", 0],
                                                        "negative": ["13", 0], "latent": ["4", 0],
                                                        "schedule": ["15", 0], "seed": SEED, "cfg": CFG}},
             "17": {"class_type": "VAEDecode", "inputs": {"samples": ["16", 0], "vae": ["1", 2]}},
             "18": {"class_type": "PreviewImage", "inputs": {"images": ["17", 0]}}}
    with single_thread():
        res = executor.run(both)
    assert res.status == "success", res.error and res.error.get("exception_message")
    lora_image, base_branch = res.values["7"][0], res.values["17"][0]
    assert (base_branch - base).abs().max().item() == 0.0
    assert (lora_image - base).abs().max().item() > 0.05
    loaded = services.get(ModelStore).loaded()
    unet = next(e for e in services.get(ModelStore)._entries.values() if e.name == "tiny-shapes-sd").model.network
    assert adapter_names(unet), loaded
    # the LoRA leaves the graph: the base image, bit for bit, and the adapter is gone from the network
    after = run(executor, txt2img("euler", steps=STEPS, seed=SEED, cfg=CFG))
    del res
    gc.collect()
    assert (after - base).abs().max().item() == 0.0
    assert adapter_names(unet) == []
    assert not any("lora" in type(m).__module__ for m in unet.modules())
    assert (run(executor, txt2img("euler", steps=STEPS, seed=SEED, cfg=CFG)) - base).abs().max().item() == 0.0


def chained(first: tuple, second: tuple) -> dict:
    """txt2img through two LoraLoaders in a row: (lora_name, strength_model, strength_clip) each."""
    doc = with_lora(*first)
    doc["21"] = {"class_type": "LoraLoader",
                 "inputs": {"model": ["20", 0], "clip": ["20", 1], "lora_name": second[0],
                            "strength_model": second[1], "strength_clip": second[2]}}
    for nid in ("2", "3"):
        doc[nid]["inputs"]["clip"] = ["21", 1]
    for nid in ("5", "6"):
        doc[nid]["inputs"]["model"] = ["21", 0]
    return doc


def test_two_loras_match_diffusers_with_two_adapters(executor, pipe, loras):
    ours = run(executor, chained(("kohya.safetensors", 0.5, 0.7), ("peft.safetensors", 0.4, -0.3)))
    pipe.load_lora_weights(str(loras / "loras" / "kohya.safetensors"), adapter_name="one")
    pipe.load_lora_weights(str(loras / "loras" / "peft.safetensors"), adapter_name="two")
    try:
        pipe.set_adapters(["one", "two"], adapter_weights=[{"unet": 0.5, "text_encoder": 0.7},
                                                           {"unet": 0.4, "text_encoder": -0.3}])
        with single_thread():
            ref = pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    finally:
        pipe.unload_lora_weights()
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0


def test_one_file_is_one_adapter_shared_by_branches(executor, services):
    """Two branches with the same LoRA at different strengths: one adapter, each branch its own strength; the
    same LoRA twice in a row adds its strengths."""
    from nodes.lora import adapter_names
    from nodes.model_store import ModelStore

    half, full = run(executor, with_lora("kohya.safetensors", 0.5, 0.5)), run(executor, with_lora("kohya.safetensors"))
    doc = with_lora("kohya.safetensors")
    for nid, node in with_lora("kohya.safetensors", 0.5, 0.5).items():  # a second branch, ids prefixed with 3
        if nid == "1":
            continue  # both branches share the base model
        node["inputs"] = {k: [f"3{v[0]}", v[1]] if isinstance(v, list) and v[0] != "1" else v
                          for k, v in node["inputs"].items()}
        doc[f"3{nid}"] = node
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error and res.error.get("exception_message")
    assert (res.values["7"][0] - full).abs().max().item() == 0.0
    assert (res.values["37"][0] - half).abs().max().item() == 0.0
    unet = next(e for e in services.get(ModelStore)._entries.values() if e.name == "tiny-shapes-sd").model.network
    assert len(adapter_names(unet)) == 1
    twice = chained(("kohya.safetensors", 0.5, 0.5), ("kohya.safetensors", 0.5, 0.5))
    assert (run(executor, twice) - full).abs().max().item() == 0.0


def test_strength_zero_is_the_base_model(executor, base):
    assert (run(executor, with_lora("kohya.safetensors", 0.0, 0.0)) - base).abs().max().item() == 0.0
    assert (run(executor, with_lora("kohya.safetensors", 0.0, model_only=True)) - base).abs().max().item() == 0.0


@pytest.mark.parametrize(("name", "says"), [
    ("other_family.safetensors", "does not fit this Stable Diffusion 1.x model"),
    ("missing_layers.safetensors", "no such layer"),
    ("second_text_encoder.safetensors", "parts this Stable Diffusion 1.x model does not have (text_encoder_2)"),
    ("not_a_lora.safetensors", "is not a LoRA"),
    ("dora.safetensors", "is a DoRA LoRA, which is not read here"),
    ("pickled.pt", "only .safetensors are loaded"),
])
def test_bad_files_are_refused_naming_lora_name(executor, name, says):
    message = fails(executor, with_lora(name))
    assert message.startswith("lora_name") and says in message, message


def test_comfyui_inputs_and_outputs():
    import nodes
    from graph_runtime import default_registry

    reg = default_registry(with_entry_points=False)
    nodes.register(reg)
    full, only = reg.get("LoraLoader"), reg.get("LoraLoaderModelOnly")
    assert list(full.input_specs()) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert list(only.input_specs()) == ["model", "lora_name", "strength_model"]
    spec = full.input_specs()["strength_model"]
    assert (spec.default, spec.ge, spec.le, spec.extra.get("step")) == (1.0, -100.0, 100.0, 0.01)
    assert [o.type for o in full.OUTPUTS] == ["MODEL", "CLIP"] and [o.type for o in only.OUTPUTS] == ["MODEL"]


# ---- SDXL: kohya's layout over the original (sgm) UNet names, with both text encoders (lora_te1_, lora_te2_)

@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, services):
    from tiny_families import executor_over, shared_family

    fam = shared_family("sdxl", tmp_path_factory)
    sgm = sgm_names(fam.pipe.unet, low_rank(linears(fam.pipe.unet, lambda n: ".attentions." in n), 3))
    te1 = low_rank(linears(fam.pipe.text_encoder, lambda n: bool(TE_LAYERS.search(n))), 4)
    te2 = low_rank(linears(fam.pipe.text_encoder_2, lambda n: bool(TE_LAYERS.search(n))), 5)
    loras = tmp_path_factory.mktemp("sdxl_loras")
    (loras / "loras").mkdir()
    save_file(kohya({"lora_unet_": sgm, "lora_te1_": te1, "lora_te2_": te2}),
              loras / "loras" / "sdxl_kohya.safetensors")
    comfy = {}  # the same LoRA in ComfyUI's layout: diffusion_model.<sgm name>, text_encoders.clip_l / clip_g
    for prefix, weights in (("diffusion_model.", sgm), ("text_encoders.clip_l.transformer.", te1),
                            ("text_encoders.clip_g.transformer.", te2)):
        for name, (down, up) in weights.items():
            comfy |= {f"{prefix}{name}.lora_down.weight": down, f"{prefix}{name}.lora_up.weight": up,
                      f"{prefix}{name}.alpha": torch.tensor(ALPHA)}
    save_file(comfy, loras / "loras" / "sdxl_comfy.safetensors")
    with executor_over([fam.models, loras], tmp_path_factory.mktemp("sdxl_run"), services) as ex:
        yield fam, ex, loras / "loras" / "sdxl_kohya.safetensors"


def family_graph(model_name: str, scheduler: str, lora: dict) -> dict:
    """LoadModel -> ``lora`` (node 20) -> TextEncode x2 / Scheduler / Sampler -> VAEDecode, over 64x64."""
    clip = ["20", 1] if lora["class_type"] == "LoraLoader" else ["1", 1]
    return {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": model_name, "device": "cpu", "dtype": "fp32"}},
        "20": lora,
        "2": {"class_type": "TextEncode", "inputs": {"text": PROMPT, "clip": clip}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": clip}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1, "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["20", 0], "scheduler": scheduler, "steps": STEPS}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["20", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": SEED,
                                                  "cfg": CFG}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


def family_pipeline_image(fam, scheduler: str, path, weights: dict) -> torch.Tensor:
    entry = registry.get(scheduler)
    pipe = fam.pipe
    with registry.quiet_diffusers():
        pipe.scheduler = entry.cls.from_config(fam.config, **entry.config_overrides(fam.config))
    pipe.load_lora_weights(str(path), adapter_name="reference")
    try:
        pipe.set_adapters(["reference"], adapter_weights=[weights])
        with single_thread():
            ref = pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    finally:
        pipe.unload_lora_weights()
    return ref.permute(0, 2, 3, 1).float()


def test_sdxl_lora_with_both_text_encoders_matches_diffusers(sdxl):
    fam, ex, path = sdxl
    doc = family_graph("tiny-sdxl", "euler", {
        "class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": path.name,
                                               "strength_model": 0.7, "strength_clip": 1.3}})
    with single_thread():
        res = ex.run(doc)
    assert res.status == "success", res.error and res.error.get("exception_message")
    ours = res.values["7"][0]
    model, clip = res.values["20"]
    assert {a.component for a, _ in model.loras} == {"unet"}
    assert sorted(a.component for a, _ in clip.loras) == ["text_encoder", "text_encoder_2"]
    del res, model, clip
    ref = family_pipeline_image(fam, "euler", path, {"unet": 0.7, "text_encoder": 1.3, "text_encoder_2": 1.3})
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
    # ComfyUI's layout of the same LoRA: the same image
    doc["20"]["inputs"]["lora_name"] = "sdxl_comfy.safetensors"
    assert (run(ex, doc) - ours).abs().max().item() == 0.0
    # every part took its share: without the LoRA the image differs
    doc.pop("20")
    for nid in ("2", "3"):
        doc[nid]["inputs"]["clip"] = ["1", 1]
    for nid in ("5", "6"):
        doc[nid]["inputs"]["model"] = ["1", 0]
    assert (run(ex, doc) - ours).abs().max().item() > 0.01


def test_sd3_transformer_lora_matches_diffusers(tmp_path_factory, services):
    """The same code on SD3's MMDiT: a diffusers/peft-layout transformer LoRA through LoraLoaderModelOnly."""
    from tiny_families import executor_over, shared_family

    fam = shared_family("sd3", tmp_path_factory)
    weights = low_rank(linears(fam.pipe.transformer, lambda n: ".attn." in n), 6)
    root = tmp_path_factory.mktemp("sd3_loras")
    (root / "loras").mkdir()
    path = root / "loras" / "sd3_peft.safetensors"
    save_file(peft_layout({"transformer": weights}), path)
    doc = family_graph("tiny-sd3", "flow_euler", {
        "class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": path.name,
                                                        "strength_model": 0.8}})
    with executor_over([fam.models, root], tmp_path_factory.mktemp("sd3_run"), services) as ex:
        ours = run(ex, doc)
        doc["20"]["inputs"]["strength_model"] = 0.0
        base = run(ex, doc)
    ref = family_pipeline_image(fam, "flow_euler", path, {"transformer": 0.8})
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
    assert (ours - base).abs().max().item() > 0.01


def test_editor_saved_lora_loader_converts_with_comfyui_widget_order():
    """ComfyUI's editor saves LoraLoader's widgets as [lora_name, strength_model, strength_clip]."""
    import nodes
    from graph_runtime import default_registry
    from graph_runtime.ui_format import ui_to_api

    reg = default_registry(with_entry_points=False)
    nodes.register(reg)
    ui = {"nodes": [
        {"id": 4, "type": "CheckpointLoaderSimple", "inputs": [], "widgets_values": ["tiny-shapes-sd"],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": [2]}]},
        {"id": 10, "type": "LoraLoader", "widgets_values": ["kohya.safetensors", 0.6, -0.4],
         "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "clip", "type": "CLIP", "link": 2}],
         "outputs": []}],
        "links": [[1, 4, 0, 10, 0, "MODEL"], [2, 4, 1, 10, 1, "CLIP"]]}
    api = ui_to_api(ui, reg)
    assert api["10"]["class_type"] == "LoraLoader"
    assert api["10"]["inputs"] == {"model": ["4", 0], "clip": ["4", 1], "lora_name": "kohya.safetensors",
                                   "strength_model": 0.6, "strength_clip": -0.4}


def test_a_run_inside_a_run_gets_its_own_adapters_and_hands_them_back(executor):
    """A LoRA'd run that starts a base run of the same network inside it (in the same thread): the inner run
    sees the base network, the outer one its LoRA again afterwards."""
    from nodes.lora import model_applied

    with single_thread():
        res = executor.run(with_lora("kohya.safetensors", 0.9, 0.0))
    assert res.status == "success", res.error and res.error.get("exception_message")
    base_model, lora_model = res.values["1"][0], res.values["20"][0]
    net = base_model.network
    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, net.config.cross_attention_dim, generator=g)

    def out():
        with torch.inference_mode():
            return net(x, 500, encoder_hidden_states=emb).sample

    with model_applied(base_model):
        base = out()
    with model_applied(lora_model):
        outer = out()
        with model_applied(base_model):
            inner = out()
        again = out()
    assert (inner - base).abs().max().item() == 0.0
    assert (again - outer).abs().max().item() == 0.0
    assert (outer - base).abs().max().item() > 1e-3
