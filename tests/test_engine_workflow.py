"""The workflow format: API format in, the same document out; wrapped prompts; oversized files refused."""

import json

import pytest

from graph_runtime import WorkflowFormatError, load_workflow_document
from graph_runtime.workflow import read_json_file

DOC = {
    "3": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 2.0, "op": "add"}, "_meta": {"title": "Sum"}},
    "1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}, "is_changed": ["x"]},
}


def test_round_trip_is_unchanged(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(DOC))
    doc = load_workflow_document(path)
    assert doc == DOC and json.dumps(doc) == json.dumps(DOC)  # node order and unknown keys kept


def test_wrapped_prompt_is_accepted(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"prompt": DOC, "client_id": "abc"}))
    assert load_workflow_document(path) == DOC


def test_oversized_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # a sparse 100 MB file
    with pytest.raises(WorkflowFormatError, match="100.0 MiB; workflows larger than 32 MiB are refused"):
        load_workflow_document(path)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object of nodes"),
    ("[" * 100000 + "]" * 100000, "nests too deeply|not valid JSON"),
])
def test_not_a_workflow(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(WorkflowFormatError, match=match):
        load_workflow_document(path)


def test_missing_file():
    with pytest.raises(WorkflowFormatError, match="cannot read"):
        read_json_file("/nonexistent/wf.json")
