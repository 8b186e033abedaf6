"""What a set of workflows loads, and which stand-in goes under each name.

:func:`references` reads the loader nodes of a workflow: API format by input name; the editor's format node by
node, widget values in the loaders' own widget order (:data:`LOADERS`), the nodes inside
``definitions.subgraphs`` included -- so files the editor-format converter cannot take yet are read too. :func:`plan` decides
each file's family and part -- from the loader and its ``type``, from the file name, and from the other
models the same workflow loads -- and gives the files to write and, for each name it cannot place, why.
No torch is imported here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry

MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
MUTED, BYPASSED = 2, 4


@dataclass(frozen=True)
class Loader:
    """A loader node: the part its files are, its widgets in the editor's order, which of them name files,
    and its CLIP ``type`` input with its default (or, without the input, the type it always has)."""

    part: str
    widgets: tuple[str, ...]
    names: tuple[str, ...]
    type_input: str | None = None
    default_type: str | None = None


def _loader(part: str, *widgets: str, type_input: str | None = None, default_type: str | None = None) -> Loader:
    names = tuple(w for w in widgets if w.endswith("_name") or w[:-1].endswith("_name"))
    return Loader(part, widgets, names, type_input, default_type)


LOADERS: dict[str, Loader] = {
    "CheckpointLoaderSimple": _loader("checkpoint", "ckpt_name"),
    "LoadModel": _loader("model", "model_name", "device", "dtype"),
    "UNETLoader": _loader("diffusion_model", "unet_name", "weight_dtype"),
    "CLIPLoader": _loader("text_encoder", "clip_name", "type", "device", type_input="type",
                          default_type="stable_diffusion"),
    "DualCLIPLoader": _loader("text_encoder", "clip_name1", "clip_name2", "type", "device", type_input="type",
                              default_type="sdxl"),
    "TripleCLIPLoader": _loader("text_encoder", "clip_name1", "clip_name2", "clip_name3", default_type="sd3"),
    "QuadrupleCLIPLoader": _loader("text_encoder", "clip_name1", "clip_name2", "clip_name3", "clip_name4",
                                   default_type="hidream"),
    "VAELoader": _loader("vae", "vae_name"),
    "LoraLoader": _loader("lora", "lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": _loader("lora", "lora_name", "strength_model"),
    "ControlNetLoader": _loader("controlnet", "control_net_name"),
    "DiffControlNetLoader": _loader("controlnet", "control_net_name"),
    "UpscaleModelLoader": _loader("upscale_model", "model_name"),
    "CLIPVisionLoader": _loader("clip_vision", "clip_name"),
    "StyleModelLoader": _loader("style_model", "style_model_name"),
}
#: where each part is looked for under a models folder ("" = the models folder itself, where LoadModel resolves
#: names; CheckpointLoaderSimple's names are inside checkpoints/, as ComfyUI's): where stand-ins are written. A
#: family gives a part stand-ins with a writer in its registry entry.
PART_FOLDERS = {"checkpoint": "checkpoints", "model": "", "diffusion_model": "diffusion_models", "text_encoder": "text_encoders",
                "vae": "vae", "lora": "loras", "controlnet": "controlnet",
                "upscale_model": "upscale_models"}
PART_LABELS = {"checkpoint": "all-in-one checkpoint", "model": "model", "diffusion_model": "diffusion model",
               "text_encoder": "text encoder", "vae": "VAE", "lora": "LoRA", "controlnet": "ControlNet",
               "upscale_model": "upscale model", "clip_vision": "CLIP vision model", "style_model": "style model"}
#: parts that say which family a workflow is
MODEL_PARTS = ("checkpoint", "model", "diffusion_model")


@dataclass(frozen=True)
class Reference:
    """One file name a workflow's node loads."""

    workflow: str
    node_id: str
    class_type: str
    input: str
    name: Any
    part: str | None = None
    clip_type: str | None = None
    #: position and count of the file among its CLIP loader's files
    slot: tuple[int, int] = (0, 1)

    def where(self) -> str:
        return f"{self.workflow}: node {self.node_id} ({self.class_type}) input {self.input}"


@dataclass
class Placement:
    """One file (or diffusers folder, for LoadModel names without a suffix) to write."""

    path: str  # relative to the models folder
    family: str
    part: str
    role: str | None
    refs: list[Reference] = field(default_factory=list)

    def describe(self) -> str:
        label = registry.FAMILIES[self.family].label
        what = PART_LABELS[self.part] + (f" ({self.role})" if self.role else "")
        return f"{label} {what}"


@dataclass(frozen=True)
class Refusal:
    ref: Reference
    reason: str

    def message(self) -> str:
        return f"{self.ref.where()}: {self.ref.name!r}: {self.reason}"


@dataclass
class Plan:
    placements: dict[str, Placement] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    #: names a workflow loads that need no stand-in (shipped with the runtime)
    shipped: list[Reference] = field(default_factory=list)

    @property
    def families(self) -> list[str]:
        return sorted({p.family for p in self.placements.values()})


class WorkflowReadError(ValueError):
    """A workflow file that cannot be read as a workflow."""


# ---- reading workflows ---------------------------------------------------------------------------------------

def read_workflow(path: str | Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowReadError(f"{path}: cannot read the workflow ({exc})") from exc
    if not isinstance(doc, dict):
        raise WorkflowReadError(f"{path}: a workflow is a JSON object, got {type(doc).__name__}")
    return doc


def _looks_like_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)


def _api_references(doc: dict, workflow: str) -> list[Reference]:
    refs = []
    for nid, node in doc.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        cls, inputs = str(node.get("class_type", "")), node["inputs"]
        loader = LOADERS.get(cls)
        if loader is None:
            refs += [Reference(workflow, str(nid), cls, k, v) for k, v in inputs.items() if _looks_like_file(v)]
            continue
        given = inputs.get(loader.type_input) if loader.type_input else None
        clip_type = given if isinstance(given, str) else loader.default_type
        names = [n for n in loader.names if n in inputs]
        for i, key in enumerate(names):
            refs.append(Reference(workflow, str(nid), cls, key, inputs[key], loader.part, clip_type,
                                  (i, len(names))))
    return refs


def _ui_nodes(doc: dict) -> list[dict]:
    """An editor file's nodes and its subgraphs' nodes (a subgraph's instances only mirror those), less the
    muted and bypassed ones."""
    subgraphs = [sg for sg in (doc.get("definitions") or {}).get("subgraphs") or [] if isinstance(sg, dict)]
    ids = {sg.get("id") for sg in subgraphs}
    nodes = [n for n in doc.get("nodes") or [] if isinstance(n, dict)]
    for sg in subgraphs:
        nodes += [n for n in sg.get("nodes") or [] if isinstance(n, dict)]
    return [n for n in nodes if n.get("mode") not in (MUTED, BYPASSED) and n.get("type") not in ids]


def _ui_references(doc: dict, workflow: str) -> list[Reference]:
    """The loaders of an editor file, node by node (subgraphs' nodes too), values by widget position."""
    api = {}
    for node in _ui_nodes(doc):
        values = node.get("widgets_values")
        cls = str(node.get("type", ""))
        loader = LOADERS.get(cls)
        if isinstance(values, dict):  # some nodes keep their widgets by name
            inputs = dict(values)
        elif loader is not None and isinstance(values, list):
            inputs = dict(zip(loader.widgets, values, strict=False))
        elif isinstance(values, list):
            inputs = {f"widget {i}": v for i, v in enumerate(values)}
        else:
            continue
        api[f"{node.get('id')}"] = {"class_type": cls, "inputs": inputs}
    return _api_references(api, workflow)


def references(doc: dict, workflow: str) -> list[Reference]:
    """Every file name ``doc``'s nodes load, in node order."""
    from graph_runtime.ui_format import is_ui_format

    if is_ui_format(doc):
        return _ui_references(doc, workflow)
    return _api_references(doc, workflow)


# ---- deciding ------------------------------------------------------------------------------------------------

def _type_families(ref: Reference) -> tuple[str, ...]:
    if not ref.clip_type:
        return ()
    return registry.CLIP_TYPE_FAMILIES.get(ref.clip_type, (ref.clip_type,))


def _own_family(ref: Reference) -> str | None:
    """The family a reference names by itself: a CLIP loader by its type, a model or VAE by its file name."""
    if ref.part == "text_encoder":
        return _type_families(ref)[0] if _type_families(ref) else None
    return registry.family_of_name(str(ref.name))


#: node types that make a Stable Diffusion (SD1.x / SDXL) latent: a checkpoint that names no family is SD1.x
#: in a workflow with one of them (ComfyUI's classic graph)
SD_LATENT_NODES = ("EmptyLatentImage", "EmptyLatent")


def workflow_family(refs: list[Reference], node_types: set[str] = frozenset()) -> str | None:
    """The family a workflow's models say (most named by its model files, then by its CLIP loaders' types,
    then by its VAEs); SD1.x for a checkpoint that names none in a graph that makes SD latents."""
    for parts in (MODEL_PARTS, ("text_encoder",), ("vae",)):
        named = Counter(f for r in refs if r.part in parts and (f := _own_family(r)))
        if named:
            return named.most_common(1)[0][0]
    if any(r.part in ("checkpoint", "model") for r in refs) and node_types & set(SD_LATENT_NODES):
        return "sd1"
    return None


def node_types(doc: dict) -> set[str]:
    """The node types of a workflow (API format, or the editor's with its subgraphs)."""
    from graph_runtime.ui_format import is_ui_format

    if is_ui_format(doc):
        return {str(n.get("type")) for n in _ui_nodes(doc)}
    return {str(n.get("class_type")) for n in doc.values() if isinstance(n, dict)}


def _family(ref: Reference, primary: str | None) -> str | None:
    if ref.part == "text_encoder":
        candidates = _type_families(ref)
        return primary if primary in candidates else (candidates[0] if candidates else primary)
    if primary in registry.SHARED_NAMES.get(str(ref.name).lower().rsplit("/", 1)[-1], ()):
        return primary
    return _own_family(ref) or primary


def _role(ref: Reference, fam: registry.FamilyStandIns) -> tuple[str | None, str]:
    role = registry.role_of_name(str(ref.name))
    if role is None:
        by_pos = fam.roles_by_position.get(ref.slot[1], ())
        role = by_pos[ref.slot[0]] if ref.slot[0] < len(by_pos) else None
    if role is None or role not in fam.encoder_roles:
        parts = ", ".join(fam.encoder_roles) or "none read from single files yet"
        said = f"the name says {role}" if role else "the name says none of its parts"
        return None, f"a {fam.label} text encoder, but {said} (its text encoders: {parts})"
    return role, ""


def _target(ref: Reference, kind: str) -> tuple[str | None, str]:
    """Where the stand-in for ``ref`` goes (relative to the models folder), or why it cannot be made."""
    name = ref.name
    if kind != "folder" and not name.lower().endswith(".safetensors"):
        return None, "only .safetensors files are loaded here (pickle formats can run code)"
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith(("/", "\\")) or ":" in parts[0] or "\x00" in name:
        return None, "not a file name inside the models folder"
    folder = PART_FOLDERS[ref.part]
    return "/".join([folder, *parts] if folder else parts), ""


def writer_kind(part: str, name: str) -> str:
    """Which writer makes a part: LoadModel's names are diffusers folders, or checkpoints when they are files."""
    if part == "model":
        return "checkpoint" if name.lower().endswith(MODEL_SUFFIXES) else "folder"
    return part


def _shipped(ref: Reference) -> bool:
    """A model the runtime ships (the embedded one): a stand-in would hide it."""
    if ref.part not in ("checkpoint", "model"):
        return False
    from graph_runtime import UnsafePathError, resolve_inside

    from ..models import REPO_MODELS

    try:
        return resolve_inside(REPO_MODELS, ref.name).exists()
    except UnsafePathError:
        return False


def _place(ref: Reference, primary: str | None, plan: Plan) -> None:
    if not isinstance(ref.name, str):
        reason = ("the file name comes from a link, so it is not known before running"
                  if isinstance(ref.name, list) else "not a file name")
        plan.refusals.append(Refusal(ref, reason))
        return
    if ref.part is None:
        plan.refusals.append(Refusal(ref, f"{ref.class_type} is no loader that stand-ins are written for"))
        return
    if ref.part not in PART_FOLDERS:
        plan.refusals.append(Refusal(ref, f"{PART_LABELS[ref.part]} files have no stand-ins yet"))
        return
    if _shipped(ref):
        plan.shipped.append(ref)
        return
    if ref.part in registry.FREE_PARTS:
        _place_free(ref, plan)
        return
    family = _family(ref, primary)
    if family is None:
        plan.refusals.append(Refusal(ref, "no family is told by the file name, the loader's type or the "
                                          "workflow's other models"))
        return
    fam = registry.FAMILIES.get(family)
    if fam is None:
        plan.refusals.append(Refusal(ref, f"family {family} (from its {_evidence(ref, family)}) has no stand-ins "
                                          f"yet (families with stand-ins: {', '.join(registry.model_families())})"))
        return
    kind = writer_kind(ref.part, ref.name)
    writable = bool(fam.encoder_roles) if kind == "text_encoder" else (kind == "folder" or kind in fam.parts)
    if not writable:
        plan.refusals.append(Refusal(ref, fam.notes.get(kind)
                                     or f"{fam.label} {PART_LABELS[kind]} files have no stand-ins yet"))
        return
    role = None
    if ref.part == "text_encoder":
        role, why = _role(ref, fam)
        if role is None:
            plan.refusals.append(Refusal(ref, why))
            return
        family = fam.encoders_from.get(role, family)  # a shared file: the lending family's stand-in
    path, why = _target(ref, kind)
    if path is None:
        plan.refusals.append(Refusal(ref, why))
        return
    part = "checkpoint" if kind == "checkpoint" else ref.part  # LoadModel's files are checkpoints too
    _add(plan, ref, path, family, part, role)


def _place_free(ref: Reference, plan: Plan) -> None:
    """A part that fits any workflow (an upscale model): its role (scale) from the file name."""
    family, role_of = registry.FREE_PARTS[ref.part]
    path, why = _target(ref, ref.part)
    if path is None:
        plan.refusals.append(Refusal(ref, why))
        return
    _add(plan, ref, path, family, ref.part, role_of(ref.name))


def _add(plan: Plan, ref: Reference, path: str, family: str, part: str, role: str | None) -> None:
    """Place ``ref`` at ``path``, or refuse it when another reference wants that file as something else."""
    have = plan.placements.get(path)
    if have is None:
        plan.placements[path] = Placement(path, family, part, role, [ref])
    elif (have.family, have.part, have.role) == (family, part, role):
        have.refs.append(ref)
    else:
        plan.refusals.append(Refusal(ref, f"wanted here as a {registry.FAMILIES[family].label} "
                                          f"{PART_LABELS[part]}{f' ({role})' if role else ''}, but "
                                          f"{have.refs[0].where()} wants it as a {have.describe()}"))


def _evidence(ref: Reference, family: str) -> str:
    if ref.part == "text_encoder" and family in _type_families(ref):
        return f"loader type {ref.clip_type}"
    if registry.family_of_name(str(ref.name)) == family:
        return "file name"
    return "workflow's other models"


def plan(workflows: dict[str, dict]) -> Plan:
    """The stand-ins for ``workflows`` (display name -> document), each workflow's files of one family set."""
    out = Plan()
    for name, doc in workflows.items():
        refs = references(doc, name)
        primary = workflow_family(refs, node_types(doc))
        for ref in refs:
            _place(ref, primary, out)
    return out
