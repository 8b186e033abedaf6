"""Batch runs: sweep expansion, cache reuse across jobs, manifest, resume, failure isolation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_runtime import Node, NodeError, NodeInputs, NodeRegistry, Output, Widget, builtin_nodes
from graph_runtime.batch import cli as batch_cli
from graph_runtime.batch.manifest import ManifestWriter, file_digest, iter_records, read_manifest
from graph_runtime.batch.sweep import (
    SweepError,
    expand_jobs,
    job_id,
    order_axes,
    parse_sweep,
    read_params_file,
)

REPO = Path(__file__).resolve().parent.parent
RUNS: list[tuple[str, object]] = []  # (node type, value) of every execution of the counting nodes


class Encode(Node):
    """Stands in for a text encoder: upstream, expensive, counted."""

    class Inputs(NodeInputs):
        text: str = Widget("")

    OUTPUTS = (Output("STRING", "cond"),)

    def execute(self, inputs, ctx):
        RUNS.append(("Encode", inputs.text))
        return (f"<{inputs.text}>",)


class Sample(Node):
    """Stands in for a sampler: takes a seed, counted; fails on request."""

    class Inputs(NodeInputs):
        cond: str = Widget("")
        seed: int = Widget(0, ge=0)
        fail_on: int = Widget(-1)

    OUTPUTS = (Output("STRING", "image"),)

    def execute(self, inputs, ctx):
        RUNS.append(("Sample", inputs.seed))
        if inputs.seed == inputs.fail_on:
            raise NodeError(f"seed {inputs.seed} is cursed")
        return (f"{inputs.cond} seed={inputs.seed}",)


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    builtin_nodes.register(reg)
    reg.register_all([Encode, Sample])
    return reg


WORKFLOW = {
    "1": {"class_type": "Encode", "inputs": {"text": "a cat"}},
    "2": {"class_type": "Sample", "inputs": {"cond": ["1", 0], "seed": 0}},
    "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename": "image.txt"}},
}


@pytest.fixture
def workflow(tmp_path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(WORKFLOW))
    RUNS.clear()
    return path


def batch(*argv: str) -> int:
    return batch_cli.main([*map(str, argv), "--quiet"], registry_factory=registry)


def manifest(out: Path) -> list[dict]:
    return list(iter_records(out / "manifest.jsonl"))


# -- sweep expansion ----------------------------------------------------------------------------------------

def test_sweep_values_ranges_files_and_types(tmp_path):
    reg = registry()
    assert parse_sweep("2.seed=1..4", WORKFLOW, reg) == ("2.seed", [1, 2, 3, 4])
    assert parse_sweep("2.seed=5..3", WORKFLOW, reg)[1] == [5, 4, 3]
    assert parse_sweep("2.seed=0..10:5,42", WORKFLOW, reg)[1] == [0, 5, 10, 42]
    assert parse_sweep("2.seed=[7, 8]", WORKFLOW, reg)[1] == [7, 8]
    # a text input keeps tokens as written: "42" stays a string, "1..2" is not a range
    assert parse_sweep("1.text=42,1..2,a dog", WORKFLOW, reg)[1] == ["42", "1..2", "a dog"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox, in snow\n\n123\n")
    assert parse_sweep(f"1.text=@{prompts}", WORKFLOW, reg)[1] == ["a red fox, in snow", "123"]
    # without a registry that knows the node, values are JSON when they parse
    assert parse_sweep("1.text=42,x", WORKFLOW, None)[1] == [42, "x"]


def test_product_and_order_upstream_axes_outermost():
    jobs = expand_jobs(WORKFLOW, [("2.seed", [1, 2, 3]), ("1.text", ["a", "b"])])
    assert [tuple(j.params.items()) for j in jobs] == [
        (("1.text", t), ("2.seed", s)) for t in ("a", "b") for s in (1, 2, 3)]
    assert order_axes(["3.filename", "2.seed", "1.text"], WORKFLOW) == ["1.text", "2.seed", "3.filename"]
    assert len({j.id for j in jobs}) == 6
    assert job_id({"1.text": "a", "2.seed": 1}) == job_id({"2.seed": 1, "1.text": "a"})


def test_params_files_jsonl_and_csv(tmp_path):
    reg = registry()
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"2.seed": 5, "1.text": "x"}\n\n{"2": {"seed": 6}, "1.text": "y"}\n')
    assert read_params_file(jl, WORKFLOW, reg) == [{"2.seed": 5, "1.text": "x"}, {"2.seed": 6, "1.text": "y"}]
    cs = tmp_path / "p.csv"
    cs.write_text('1.text,2.seed\n"a, b",1\n7,2\n')
    assert read_params_file(cs, WORKFLOW, reg) == [{"1.text": "a, b", "2.seed": 1}, {"1.text": "7", "2.seed": 2}]
    # rows with the same upstream value end up adjacent, and the sweep multiplies the rows
    rows = [{"1.text": "a"}, {"1.text": "b"}, {"1.text": "a"}]
    jobs = expand_jobs(WORKFLOW, [("2.seed", [1, 2])], rows)
    assert [j.params["1.text"] for j in jobs] == ["a", "a", "b", "b"]


@pytest.mark.parametrize("content, suffix, expected", [
    ('{"2.seed": 1}\n{"2.seed": 2,\n', ".jsonl", "line 2: not valid JSON"),
    ('[1, 2]\n', ".jsonl", "line 1: expected a JSON object"),
    ('{"2.sed": 1}\n', ".jsonl", "line 1 field '2.sed': node 2 (Sample) has no input 'sed'"),
    ('2.seed,1.text\n1,a\n2\n', ".csv", "line 3: 1 fields, the header has 2"),
    ('9.seed\n1\n', ".csv", "line 1 column 1 '9.seed': the workflow has no node '9'"),
])
def test_malformed_params_file_is_refused_naming_line_and_field(workflow, tmp_path, capsys, content, suffix,
                                                                 expected):
    params = tmp_path / f"params{suffix}"
    params.write_text(content)
    assert batch(workflow, "--from-file", params, "--output-dir", tmp_path / "out") == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.jsonl").exists() and RUNS == []


@pytest.mark.parametrize("sweep, expected", [
    ("9.seed=1,2", "the workflow has no node '9'"),
    ("2.sed=1,2", "node 2 (Sample) has no input 'sed' (inputs: cond, seed, fail_on)"),
    ("2.seed=1,two", "job 2 of 2 (2.seed=\"two\") is not a valid workflow"),
    ("2.seed=3,-1", "node 2 (Sample) input 'seed'"),
    ("2.seed", "expected NODE_ID.INPUT=VALUES"),
    ("2.seed=@missing.txt", "cannot read 'missing.txt'"),
])
def test_bad_sweeps_are_refused_before_any_job(workflow, tmp_path, capsys, sweep, expected):
    assert batch(workflow, "--sweep", sweep, "--output-dir", tmp_path / "out") == 2
    assert expected in capsys.readouterr().err
    assert RUNS == [] and not (tmp_path / "out" / "manifest.jsonl").exists()


# -- running ------------------------------------------------------------------------------------------------

def test_seed_sweep_reruns_only_downstream_and_writes_manifest(workflow, tmp_path):
    out = tmp_path / "out"
    assert batch(workflow, "--sweep", "2.seed=1..5", "--output-dir", out) == 0
    assert RUNS == [("Encode", "a cat")] + [("Sample", s) for s in range(1, 6)]
    records = manifest(out)
    assert [r["params"] for r in records] == [{"2.seed": s} for s in range(1, 6)]
    for seed, rec in zip(range(1, 6), records, strict=True):
        assert rec["job_id"] == job_id({"2.seed": seed}) and rec["status"] == "ok" and rec["error"] is None
        assert rec["seconds"] >= 0 and rec["finished"] and rec["workflow"] and rec["backend"] == "local"
        [item] = rec["outputs"]
        assert item["path"] == f"jobs/{rec['job_id']}/image.txt"
        path = out / item["path"]
        assert path.read_text() == f"<a cat> seed={seed}"
        assert file_digest(path) == {"sha256": item["sha256"], "size": item["size"]}
    assert records[1]["cached"] == ["1"] and records[1]["executed"] == ["2", "3"]


def test_prompt_by_seed_sweep_encodes_each_prompt_once(workflow, tmp_path):
    # given seed-first, the runner still puts the prompt axis outermost
    assert batch(workflow, "--sweep", "2.seed=1..3", "--sweep", "1.text=a,b", "--output-dir", tmp_path / "o") == 0
    assert [r for r in RUNS if r[0] == "Encode"] == [("Encode", "a"), ("Encode", "b")]
    assert len([r for r in RUNS if r[0] == "Sample"]) == 6


def test_failed_job_is_recorded_and_the_batch_goes_on(workflow, tmp_path, capsys):
    out = tmp_path / "out"
    assert batch(workflow, "--sweep", "2.seed=1..4", "--set", "2.fail_on=3", "--output-dir", out) == 1
    records = manifest(out)
    assert [r["status"] for r in records] == ["ok", "ok", "error", "ok"]
    err = records[2]["error"]
    assert err["node_id"] == "2" and err["node_type"] == "Sample" and "cursed" in err["message"]
    assert "cursed" in capsys.readouterr().err
    # a rerun runs only the failed job again
    RUNS.clear()
    assert batch(workflow, "--sweep", "2.seed=1..4", "--set", "2.fail_on=3", "--output-dir", out) == 1
    assert [r for r in RUNS if r[0] == "Sample"] == [("Sample", 3)]


def test_resume_skips_intact_jobs_and_redoes_damaged_ones(workflow, tmp_path):
    out = tmp_path / "out"
    assert batch(workflow, "--sweep", "2.seed=1..4", "--output-dir", out) == 0
    first = manifest(out)
    (out / first[1]["outputs"][0]["path"]).write_text("tampered")
    (out / first[2]["outputs"][0]["path"]).unlink()
    with open(out / "manifest.jsonl", "ab") as f:
        f.write(b'{"job_id": "torn')  # a line cut short by a kill
    RUNS.clear()
    assert batch(workflow, "--sweep", "2.seed=1..4", "--output-dir", out) == 0
    assert sorted(r[1] for r in RUNS if r[0] == "Sample") == [2, 3]
    records, bad = read_manifest(out / "manifest.jsonl")
    assert bad == 1 and len(records) == 4 and all(r["status"] == "ok" for r in records.values())
    assert (out / first[1]["outputs"][0]["path"]).read_text() == "<a cat> seed=2"
    # the workflow changed: nothing is skipped
    RUNS.clear()
    assert batch(workflow, "--sweep", "2.seed=1..4", "--set", "1.text=a dog", "--output-dir", out) == 0
    assert len([r for r in RUNS if r[0] == "Sample"]) == 4
    RUNS.clear()
    assert batch(workflow, "--sweep", "2.seed=1..4", "--set", "1.text=a dog", "--output-dir", out, "--no-resume") == 0
    assert len([r for r in RUNS if r[0] == "Sample"]) == 4


def test_unwritable_job_folder_fails_the_job_and_keeps_the_manifest(workflow, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "jobs").write_text("not a folder")
    assert batch(workflow, "--sweep", "2.seed=1,2", "--output-dir", out) == 1
    records = manifest(out)
    assert [r["status"] for r in records] == ["error", "error"]
    assert all(r["error"]["node_id"] == "3" and r["outputs"] == [] for r in records)


def test_unwritable_output_dir_is_a_clear_error(workflow, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert batch(workflow, "--sweep", "2.seed=1,2", "--output-dir", blocker / "out") == 1
    assert "cannot write the manifest" in capsys.readouterr().err


def test_manifest_writer_closes_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"job_id": "a", "status": "ok"}\n{"job_id": "b", "sta')
    with ManifestWriter(path) as w:
        w.append({"job_id": "c", "status": "ok"})
    records, bad = read_manifest(path)
    assert set(records) == {"a", "c"} and bad == 1


def test_dry_run_lists_jobs_and_runs_nothing(workflow, tmp_path, capsys):
    assert batch(workflow, "--sweep", "2.seed=1..3", "--output-dir", tmp_path / "o", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(job_id({"2.seed": 1})) and RUNS == []


def test_arithmetic_workflow_through_the_installed_command(tmp_path):
    import subprocess
    import sys

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "batch", str(REPO / "workflows/arithmetic.json"),
                           "--sweep", "1.value=2,3", "--sweep", "5.a=x,y", "--output-dir", str(tmp_path),
                           "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] == 4 and summary["files"] == 4
    texts = sorted((tmp_path / r["outputs"][0]["path"]).read_text() for r in manifest(tmp_path))
    assert texts == ["x x 7 = 14 tiles", "x x 7 = 21 tiles", "y x 7 = 14 tiles", "y x 7 = 21 tiles"]


def test_sweep_error_type():
    with pytest.raises(SweepError, match="same input is swept twice"):
        expand_jobs(WORKFLOW, [("2.seed", [1]), ("2.seed", [2])])


def test_batch_package_imports_no_ray_torch_nodes_or_web():
    import subprocess
    import sys

    code = ("import sys, graph_runtime.batch, graph_runtime.batch.cli, graph_runtime.batch.ray_backend, "
            "graph_runtime.batch.server_backend; "
            "print(sorted(m for m in ('ray', 'torch', 'nodes', 'web') if m in sys.modules))")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_backends_share_one_run_one_signature():
    import inspect

    from graph_runtime.batch.ray_backend import RayBackend
    from graph_runtime.batch.runner import Backend, LocalBackend
    from graph_runtime.batch.server_backend import ServerBackend

    want = inspect.signature(Backend.run_one)
    for cls in (LocalBackend, ServerBackend, RayBackend):
        for method in ("open", "validate", "run_one", "run", "stop", "close"):
            assert inspect.signature(getattr(cls, method)).parameters.keys() == \
                inspect.signature(getattr(Backend, method)).parameters.keys(), (cls, method)
        assert inspect.signature(cls.run_one) == want
