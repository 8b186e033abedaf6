"""The graph-runtime command: run, validate, nodes; exit codes 0 / 2 / 1; readable errors."""

import json
import subprocess
import sys
from pathlib import Path

from graph_runtime.cli import main

ROOT = Path(__file__).resolve().parent.parent
ARITH = str(ROOT / "workflows" / "arithmetic.json")


def test_run_writes_outputs_and_exits_0(tmp_path, capsys):
    assert main(["run", ARITH, "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "tiles.txt").read_text() == "6 x 7 = 42 tiles"
    assert "6 x 7 = 42 tiles" in capsys.readouterr().out


def test_set_overrides_inputs(tmp_path):
    assert main(["run", ARITH, "--output-dir", str(tmp_path), "--quiet", "--set", "1.value=10",
                 "--set", '5.template="{c}!"']) == 0
    assert (tmp_path / "tiles.txt").read_text() == "70!"


def test_invalid_workflow_exits_2_with_readable_errors(tmp_path, capsys):
    assert main(["run", ARITH, "--output-dir", str(tmp_path), "--set", "1.value=1.5", "--set", "3.op=pow"]) == 2
    err = capsys.readouterr().err
    assert "node 1 (PrimitiveInt) input 'value'" in err
    assert "node 3 (IntMath) input 'op'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "tiles.txt").exists()


def test_undeclared_input_is_a_printed_warning(tmp_path, capsys):
    doc = json.loads(Path(ARITH).read_text())
    doc["1"]["inputs"]["vlaue"] = 10  # misspelt: ignored (the default stays), and said so
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(doc))
    assert main(["validate", str(path)]) == 0
    assert "warning: node 1 (PrimitiveInt): input 'vlaue' is not an input of PrimitiveInt" in capsys.readouterr().err
    assert main(["run", str(path), "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert "input 'vlaue' is not an input of PrimitiveInt and is ignored" in capsys.readouterr().err
    assert (tmp_path / "tiles.txt").read_text() == "6 x 7 = 42 tiles"


def test_bad_set_syntax_and_missing_node_exit_2(capsys):
    assert main(["validate", ARITH, "--set", "novalue"]) == 2
    assert main(["validate", ARITH, "--set", "99.value=1"]) == 2
    err = capsys.readouterr().err
    assert "NODE_ID.INPUT=VALUE" in err and "no node '99'" in err


def test_failure_while_running_exits_1(tmp_path, capsys):
    wf = tmp_path / "div.json"
    wf.write_text(json.dumps({"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "op": "divide"}},
                              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}))
    assert main(["run", str(wf), "--quiet"]) == 1
    assert "error in node 1 (IntMath): cannot divide by zero" in capsys.readouterr().err


def test_validate_and_unreadable_file(tmp_path, capsys):
    assert main(["validate", ARITH]) == 0
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_json_result_and_partial_run(tmp_path, capsys):
    assert main(["run", ARITH, "--output-dir", str(tmp_path), "--quiet", "--json", "--only", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "success" and list(result["outputs"]) == ["6"]
    assert not (tmp_path / "tiles.txt").exists()


def test_nodes_listing_is_derived_from_declarations(capsys):
    assert main(["nodes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    entry = info["IntMath"]
    assert entry["input"]["required"]["op"][0] == ["add", "subtract", "multiply", "divide", "modulo", "min", "max"]
    assert entry["input_order"]["required"] == ["a", "b", "op"]
    assert entry["output"] == ["INT"] and entry["category"] == "utils/math"
    assert info["ShowValue"]["output_node"] is True


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "run", ARITH, "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "done [3] Tiles" in proc.stderr


def test_set_and_sweep_type_values_by_the_declaration(tmp_path, capsys):
    """One parser of NODE.INPUT=VALUE: a STRING input takes "42" as text, an INT input takes 42 as a number."""
    from graph_runtime import default_registry
    from graph_runtime.arguments import parse_assignment
    from graph_runtime.batch.sweep import parse_sweep

    txt2img = str(ROOT / "workflows" / "txt2img.json")
    assert main(["validate", txt2img, "--set", "2.text=42", "--set", "6.seed=7"]) == 0, capsys.readouterr().err
    registry = default_registry()
    doc = json.loads(Path(txt2img).read_text())
    assert parse_assignment("2.text=42", doc, registry) == ("2", "text", "42")
    assert parse_sweep("2.text=42", doc, registry) == ("2.text", ["42"])
    assert parse_assignment('2.text="42"', doc, registry)[2] == parse_sweep('2.text="42"', doc, registry)[1][0] == "42"
    assert parse_assignment("6.seed=42", doc, registry)[2] == parse_sweep("6.seed=42", doc, registry)[1][0] == 42
    # run --set types by the declaration too; an input the node does not have is refused, naming it
    assert main(["run", ARITH, "--output-dir", str(tmp_path), "--quiet", "--set", "5.a=42"]) == 0
    assert (tmp_path / "tiles.txt").read_text() == "42 x 7 = 42 tiles"
    capsys.readouterr()
    assert main(["validate", ARITH, "--set", "5.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "node 5 (StringFormat) has no input 'nope'" in err and "Traceback" not in err
