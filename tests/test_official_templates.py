"""How far ComfyUI's official local templates (PyPI comfyui-workflow-templates-json, pinned) are from running
here, measured by running them: every template whose node types are all registered (subgraphs looked into;
notes and reroutes are the editor's own) and whose model names ``graph-runtime stand-ins`` can place gets
tiny random-weight stand-ins (and a small picture under each LoadImage name) and runs headless with
``graph-runtime run`` (shrunk by ``--set``, see :func:`shrink`), writing its outputs; one of them also runs through a real server (HTTP POST /prompt of the
converted API prompt, /history). Every other template fails validation naming each node type it lacks, in
one pass. Floors rise as families and core nodes land; the counts and the most missing node types are in the
assertion messages."""

from __future__ import annotations

import collections
import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nodes_support import make_registry
from tiny_sd import single_thread

from graph_runtime import Executor
from graph_runtime.arguments import load_document
from graph_runtime.cli import main
from graph_runtime.ui_format import is_ui_format

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)

EDITOR_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
#: floors, of 309 local templates in 0.1.123 (measured: 35 complete, 78 placeable, 17 runnable of which 14 run
#: sampled, up to 3 per family set: SDXL, SD3.5 (with blur / canny ControlNets), Flux.1, Z-Image, Qwen-Image,
#: and templates without models)
FLOOR_COMPLETE = 33
FLOOR_PLACEABLE = 75
FLOOR_RUNS = 12
#: templates that run, at most this many per family set (the rest of a family are validated and planned only)
RUNS_PER_FAMILY = 3
#: what :func:`shrink` sets: latent / image sizes, sampling steps, batch sizes
SMALL = {"width": 64, "height": 64, "steps": 2, "batch_size": 1}
SERVED = "image_sdxl_simple"


def templates() -> list[Path]:
    import comfyui_workflow_templates_json as pkg

    folder = Path(pkg.__file__).parent / "templates"
    return [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(("api_", "index"))]


def node_types(doc: dict) -> set[str]:
    """Every node type an editor file holds (its subgraphs' included), less the editor's own."""
    subgraphs = (doc.get("definitions") or {}).get("subgraphs") or []
    ids = {sg.get("id") for sg in subgraphs}
    found = {n.get("type") for n in doc.get("nodes", [])}
    for sg in subgraphs:
        found |= {n.get("type") for n in sg.get("nodes", [])}
    return found - ids - EDITOR_ONLY


def wired_types(api: dict) -> set[str]:
    """The node types of the API prompt's nodes that have a link in or out (a stray unlinked node is not part
    of the graph that runs)."""
    nodes = {k: v for k, v in api.items() if isinstance(v, dict)}
    linked = set()
    for nid, node in nodes.items():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in nodes:
                linked |= {nid, str(value[0])}
    return {str(nodes[n].get("class_type")) for n in linked}


def shrink(api: dict) -> list[str]:
    """``--set`` assignments making a template cheap: every literal width / height / steps / batch_size input
    set to :data:`SMALL`'s value (whatever the node: latents, image sizes, samplers, schedulers)."""
    sets = []
    for nid, node in api.items():
        for name, value in (node.get("inputs") or {}).items():
            if name in SMALL and isinstance(value, int) and not isinstance(value, bool) and value > SMALL[name]:
                sets.append(f"{nid}.{name}={SMALL[name]}")
    return sets


def input_images(api: dict, folder: Path) -> None:
    """A small picture under every image name the template's LoadImage nodes read (templates ship none)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for node in api.values():
        name = (node.get("inputs") or {}).get("image")
        if node.get("class_type") in ("LoadImage", "LoadImageMask") and isinstance(name, str) and "/" not in name:
            Image.new("RGBA", (SMALL["width"], SMALL["height"]), (200, 40, 40, 255)).save(folder / name, "PNG")


@dataclass
class Survey:
    total: int = 0
    complete: list[str] = field(default_factory=list)
    placeable: list[str] = field(default_factory=list)
    #: complete and placeable: these can run (name -> the families of their stand-ins)
    runnable: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing: collections.Counter = field(default_factory=collections.Counter)
    #: why names could not be placed (first words of the reason -> templates)
    refusals: collections.Counter = field(default_factory=collections.Counter)
    #: templates lacking node types: name -> (API prompt, the wired types it lacks)
    lacking: dict[str, tuple[dict, set[str]]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def counts(self, runs: int | str = "?") -> str:
        return (f"runs {runs} / node types complete {len(self.complete)} / placeable {len(self.placeable)} / "
                f"total {self.total}; most missing node types: {self.missing.most_common(12)}; "
                f"most refused model names: {self.refusals.most_common(6)}")

    def to_run(self) -> list[str]:
        """Up to :data:`RUNS_PER_FAMILY` runnable templates per family set, the one served first."""
        per, out = collections.Counter(), []
        for name in sorted(self.runnable, key=lambda n: (n != SERVED, n)):
            if per[self.runnable[name]] < RUNS_PER_FAMILY:
                per[self.runnable[name]] += 1
                out.append(name)
        return out


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.fixture(scope="module")
def survey(registry) -> Survey:
    """Every local template: its node types against the registry, its model names through the stand-ins'
    planner, its API prompt (no model is built here)."""
    from nodes.stand_ins.placement import plan

    known, out = set(registry), Survey()
    for path in templates():
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(doc, dict) and is_ui_format(doc)):
            continue
        out.total += 1
        out.paths[path.stem] = path
        unknown = node_types(doc) - known
        out.missing.update(unknown)
        result = plan({path.stem: doc})
        out.refusals.update({r.reason.split(" (")[0][:60] for r in result.refusals})
        if not result.refusals:
            out.placeable.append(path.stem)
        if unknown:
            api = load_document(str(path), registry)
            out.lacking[path.stem] = (api, wired_types(api) - known)
            continue
        out.complete.append(path.stem)
        if not result.refusals:
            out.runnable[path.stem] = tuple(result.families)
    return out


@pytest.fixture(scope="module")
def stand_ins(survey, tmp_path_factory) -> dict[str, Path]:
    """``graph-runtime stand-ins`` over the templates that run, one models folder per family set (as a user
    keeps one family's files, so a shared name such as ``clip_l.safetensors`` is one family's): template ->
    its models folder."""
    by_families = collections.defaultdict(list)
    for name in survey.to_run():
        by_families[survey.runnable[name]].append(name)
    out = {}
    for families, names in by_families.items():
        models = tmp_path_factory.mktemp("models_" + ("_".join(families) or "none"))
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), single_thread():
            code = main(["stand-ins", *(str(survey.paths[n]) for n in names), "--models-dir", str(models)])
        assert code == 0, err.getvalue()
        out |= dict.fromkeys(names, models)
    return out


def test_official_templates_whose_nodes_all_exist(survey):
    assert len(survey.complete) >= FLOOR_COMPLETE, survey.counts()
    assert len(survey.placeable) >= FLOOR_PLACEABLE, survey.counts()
    assert {"sdxl_simple_example", "sd3.5_simple_example", "image_sdxl_simple"} <= set(survey.complete)


def test_templates_that_lack_node_types_fail_validation_naming_every_one(survey, registry):
    """Validation names each wired node type a template lacks, all at once (not one layer at a time)."""
    executor, unnamed = Executor(registry), {}
    for name, (api, lacking) in survey.lacking.items():
        result = executor.validate(api)
        text = "\n".join(result.messages())
        named = {t for t in lacking if f"({t}): Node type '{t}' is not known" in text}
        if result.ok or named != lacking:
            unnamed[name] = sorted(lacking - named) or "validated"
    assert not unnamed, f"{len(unnamed)} of {len(survey.lacking)}: {unnamed}; {survey.counts()}"
    assert len(survey.lacking) == survey.total - len(survey.complete)


def test_the_run_command_refuses_a_template_naming_its_missing_nodes(survey, tmp_path, capsys):
    """``graph-runtime run`` itself on the template lacking the most node types: exit 2, nothing run, every
    missing type named."""
    name, (_, lacking) = max(survey.lacking.items(), key=lambda kv: (len(kv[1][1]), kv[0]))
    assert len(lacking) >= 5, (name, lacking)
    code = main(["run", str(survey.paths[name]), "--output-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "invalid workflow" in err, err
    assert all(f"Node type '{t}' is not known" in err for t in lacking), (sorted(lacking), err)
    assert not any(tmp_path.iterdir())


def test_runnable_templates_run_headless_on_stand_ins(survey, stand_ins, tmp_path, monkeypatch):
    """Each sampled runnable template: ``graph-runtime run`` over its stand-ins succeeds and reports outputs
    (saved files, previews or texts), which exist."""
    registry = make_registry()
    ran, failed = [], {}
    for name in survey.to_run():
        monkeypatch.setenv("GRAPH_RUNTIME_MODELS", str(stand_ins[name]))
        home, pictures = tmp_path / name, tmp_path / f"{name}-input"
        monkeypatch.setenv("GRAPH_RUNTIME_HOME", str(home))  # previews go to its temp/
        api = load_document(str(survey.paths[name]), registry)
        input_images(api, pictures)
        args = ["run", str(survey.paths[name]), "--output-dir", str(home / "output"), "--input-dir", str(pictures)]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), single_thread():
            code = main(args + ["--quiet"] + [a for s in shrink(api) for a in ("--set", s)])
        # what the run reports: saved files and previews (paths that exist), and text outputs ("[node] text")
        lines = out.getvalue().splitlines()
        files = [line for line in lines if Path(line).is_file() and Path(line).is_relative_to(home)]
        texts = [line for line in lines if line.startswith("[")]
        if code == 0 and (files or texts):
            ran.append(name)
        else:
            failed[name] = f"exit {code}, {len(files)} file(s), {len(texts)} text(s): {err.getvalue()[-400:]}"
    counts = survey.counts(f"{len(ran)} of {len(survey.to_run())} sampled ({len(survey.runnable)} runnable)")
    print(counts)
    assert not failed, f"{failed}; {counts}"
    assert len(ran) >= FLOOR_RUNS, counts


def test_a_template_runs_through_the_server(survey, stand_ins, registry, tmp_path):
    """The editor file converted to its API prompt, POSTed to a real server on loopback, finished per
    /history, its image served by /view."""
    from test_web_support import http, start_server, submit, wait_history

    from graph_runtime.arguments import apply_assignments

    assert SERVED in survey.runnable, survey.counts()
    api = load_document(str(survey.paths[SERVED]), registry)
    apply_assignments(api, shrink(api), registry)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPH_RUNTIME_MODELS", str(stand_ins[SERVED]))
        srv = start_server(tmp_path)
        try:
            pid = submit(srv.url, api, "templates")["prompt_id"]
            entry = wait_history(srv.url, pid, timeout=240)
            assert entry["status"]["status_str"] == "success", entry["status"]
            images = [i for o in entry["outputs"].values() for i in o.get("images", [])]
            assert images, entry["outputs"]
            img = images[0]
            got = http("GET", f"{srv.url}/view?filename={img['filename']}&subfolder={img['subfolder']}"
                              f"&type={img['type']}")
            assert got.status == 200 and got.body[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            srv.stop()
