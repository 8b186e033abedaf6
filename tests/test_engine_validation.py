"""Every kind of validation error, in ComfyUI's node_errors shape, collected together."""

import math

import pytest
from engine_helpers import engine_registry

from graph_runtime import validate

REG = engine_registry()


def errors_of(doc, targets=None):
    result = validate(doc, REG, targets)
    assert not result.ok
    return {nid: [(e["type"], e["extra_info"].get("input_name")) for e in entry["errors"]]
            for nid, entry in result.node_errors.items()}, result


def show(src):
    return {"class_type": "ShowValue", "inputs": {"value": src}}


def test_valid_workflow_compiles_a_plan_in_topological_order():
    doc = {"b": {"class_type": "IntMath", "inputs": {"a": ["a", 0], "b": 2, "op": "add"}},
           "a": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
           "c": show(["b", 0])}
    result = validate(doc, REG)
    assert result.ok, result.messages()
    assert result.plan.order == ["a", "b", "c"]
    assert result.plan.nodes["b"].links == {"a": ("a", 0)}
    assert result.plan.nodes["b"].literals == {"b": 2, "op": "add"}


def test_defaults_fill_missing_widgets():
    result = validate({"1": {"class_type": "IntMath", "inputs": {}}, "2": show(["1", 0])}, REG)
    assert result.ok
    assert result.plan.nodes["1"].literals == {"a": 0, "b": 0, "op": "add"}


def test_unknown_class_type():
    errs, result = errors_of({"1": {"class_type": "NoSuchNode", "inputs": {}}, "2": show(["1", 0])})
    assert errs["1"] == [("missing_node_type", None)]
    assert result.node_errors["1"]["class_type"] == "NoSuchNode"


def test_missing_required_link_input():
    errs, _ = errors_of({"1": {"class_type": "ShowValue", "inputs": {}}})
    assert errs["1"] == [("required_input_missing", "value")]


def test_undeclared_input_is_ignored_with_a_warning():
    # ComfyUI ignores inputs a node does not declare; the warning names the node and the input.
    result = validate({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1, "vlaue": 2, "extra": ["9", 0]}},
                       "2": show(["1", 0])}, REG)
    assert result.ok, result.messages()
    assert result.plan.nodes["1"].literals == {"value": 1} and result.plan.nodes["1"].links == {}
    assert [(w["node_id"], w["class_type"], w["type"], w["extra_info"]["input_name"]) for w in result.warnings] \
        == [("1", "PrimitiveInt", "undeclared_input", "vlaue"), ("1", "PrimitiveInt", "undeclared_input", "extra")]
    assert "'vlaue' is not an input of PrimitiveInt" in result.warnings[0]["message"]
    assert "declared inputs: value" in result.warnings[0]["details"]
    assert result.to_comfy()["warnings"] == result.warnings


def test_warnings_come_with_errors_too():
    _, result = errors_of({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1.5, "vlaue": 2}},
                           "2": show(["1", 0])})
    assert [w["extra_info"]["input_name"] for w in result.to_comfy()["warnings"]] == ["vlaue"]


def test_link_to_missing_node_and_output_index_out_of_range():
    errs, _ = errors_of({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                         "2": show(["9", 0]), "3": show(["1", 1])})
    assert errs["2"] == [("link_to_missing_node", "value")]
    assert errs["3"] == [("output_index_out_of_range", "value")]


@pytest.mark.parametrize("link", [["1", 1.5], ["1", 0, 0], ["1"], [None, 0], ["1", True], []])
def test_malformed_links(link):
    errs, _ = errors_of({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}, "2": show(link)})
    assert errs["2"] == [("bad_linked_input", "value")]


def test_link_type_mismatch():
    errs, result = errors_of({"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
                              "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0]}}, "3": show(["2", 0])})
    assert errs["2"] == [("return_type_mismatch", "a")]
    assert result.node_errors["2"]["errors"][0]["extra_info"]["received_type"] == "STRING"


@pytest.mark.parametrize("value,kind", [
    (1.5, "invalid_input_type"), ("3", "invalid_input_type"), (True, "invalid_input_type"),
    (2**63, "value_bigger_than_max"), (-(2**63) - 1, "value_smaller_than_min"), (None, "invalid_input_type"),
])
def test_int_literals(value, kind):
    errs, _ = errors_of({"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}}, "2": show(["1", 0])})
    assert errs["1"] == [(kind, "value")]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0"])
def test_float_literals_must_be_finite_numbers(value):
    errs, result = errors_of({"1": {"class_type": "PrimitiveFloat", "inputs": {"value": value}}, "2": show(["1", 0])})
    assert errs["1"] == [("invalid_input_type", "value")]
    import json
    json.dumps(result.to_comfy(), allow_nan=False)  # the error itself is valid JSON


def test_bounds_from_the_declaration():
    errs, _ = errors_of({"1": {"class_type": "Steps", "inputs": {"steps": 0}},
                         "2": {"class_type": "Steps", "inputs": {"steps": 1001}},
                         "3": show(["1", 0]), "4": show(["2", 0])})
    assert errs["1"] == [("value_smaller_than_min", "steps")]
    assert errs["2"] == [("value_bigger_than_max", "steps")]


def test_combo_value_not_in_list():
    errs, _ = errors_of({"1": {"class_type": "IntMath", "inputs": {"op": "pow"}}, "2": show(["1", 0])})
    assert errs["1"] == [("value_not_in_list", "op")]


def test_link_only_input_given_a_literal():
    errs, _ = errors_of({"1": {"class_type": "NeedsModel", "inputs": {"model": "sd15.safetensors"}},
                         "2": show(["1", 0])})
    assert errs["1"] == [("invalid_input_type", "model")]
    errs, _ = errors_of({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                         "2": {"class_type": "NeedsModel", "inputs": {"model": ["1", 0]}}, "3": show(["2", 0])})
    assert errs["2"] == [("return_type_mismatch", "model")]


def test_cycle_names_every_node_in_it():
    doc = {"1": {"class_type": "IntMath", "inputs": {"a": ["3", 0]}},
           "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0]}},
           "3": {"class_type": "IntMath", "inputs": {"a": ["2", 0]}},
           "4": show(["3", 0])}
    errs, result = errors_of(doc)
    for nid in ("1", "2", "3"):
        assert ("dependency_cycle", None) in errs[nid]
    assert result.node_errors["1"]["errors"][0]["extra_info"]["cycle"] == ["1", "2", "3"]
    assert "4" not in errs


def test_self_loop_is_a_cycle():
    errs, _ = errors_of({"1": {"class_type": "IntMath", "inputs": {"a": ["1", 0]}}, "2": show(["1", 0])})
    assert ("dependency_cycle", None) in errs["1"]


def test_no_output_node():
    result = validate({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}, REG)
    assert result.error["type"] == "prompt_no_outputs"
    assert validate({}, REG).error["type"] == "prompt_no_outputs"


@pytest.mark.parametrize("doc", [[], "x", 3, None])
def test_not_an_object(doc):
    assert validate(doc, REG).error["type"] == "invalid_prompt"


@pytest.mark.parametrize("spec", [3, [], {"inputs": {}}, {"class_type": 5}, {"class_type": "ShowValue", "inputs": []}])
def test_malformed_node(spec):
    errs, _ = errors_of({"1": spec})
    assert errs["1"] == [("invalid_node", None)]


def test_every_error_is_collected_with_dependent_outputs():
    doc = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": "x"}},
           "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "nope", "extra": 1}},
           "3": show(["2", 0]),
           "4": {"class_type": "Nope"}}
    errs, result = errors_of(doc)
    assert set(errs) == {"1", "2"}  # node 4 feeds no output: not checked (ComfyUI's rule)
    assert errs["2"] == [("value_not_in_list", "op")]
    assert [w["extra_info"]["input_name"] for w in result.warnings] == ["extra"]  # ignored, not an error
    assert result.node_errors["1"]["dependent_outputs"] == ["3"]
    assert result.error["type"] == "prompt_outputs_failed_validation"
    text = "\n".join(result.messages())
    assert "node 2 (IntMath) input 'op'" in text and "node 4" not in text


def test_a_spare_node_feeding_no_output_does_not_block_the_run():
    """A stray node on the canvas (broken inputs, unknown type) is ignored, as ComfyUI ignores it; an unknown
    node that an output needs is named."""
    doc = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}, "2": show(["1", 0]),
           "3": {"class_type": "IntMath", "inputs": {"a": "not a number"}},
           "4": {"class_type": "NotInstalled", "inputs": {}}, "5": "not even a node"}
    result = validate(doc, REG)
    assert result.ok and result.plan.order == ["1", "2"]
    doc["2"] = show(["4", 0])
    errs, _ = errors_of(doc)
    assert errs == {"4": [("missing_node_type", None)]}


def test_an_unknown_output_node_is_named_not_no_outputs():
    errs, result = errors_of({"1": {"class_type": "SaveSomethingUnknown", "inputs": {}}})
    assert set(errs) == {"1"} and "SaveSomethingUnknown" in "\n".join(result.messages())


def test_partial_targets_check_only_what_they_need():
    doc = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}, "2": show(["1", 0]),
           "3": {"class_type": "ShowValue", "inputs": {}}}
    assert not validate(doc, REG).ok
    result = validate(doc, REG, targets=["2"])
    assert result.ok and result.plan.order == ["1", "2"]
    assert validate(doc, REG, targets=["77"]).error["type"] == "invalid_prompt"


def test_wildcard_and_union_types():
    from graph_runtime.validation import types_compatible

    assert types_compatible("INT", "*") and types_compatible("*", "MODEL")
    assert types_compatible("INT", "INT,FLOAT") and not types_compatible("STRING", "INT,FLOAT")
    assert types_compatible("STRING", "COMBO") and not types_compatible("INT", "COMBO")


def test_every_unknown_node_type_a_workflow_wires_is_named_at_once():
    """Unknown nodes behind unknown nodes, and an unknown node nothing consumes (it may be the graph's output,
    a SaveVideo), are all named in one validation; a stray unknown node wired to nothing still is not."""
    doc = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
           "2": {"class_type": "UnknownScale", "inputs": {"x": ["1", 0]}},
           "3": {"class_type": "UnknownFilter", "inputs": {"x": ["2", 0]}},
           "4": show(["3", 0]),
           "5": {"class_type": "UnknownSaveVideo", "inputs": {"frames": ["6", 0]}},
           "6": {"class_type": "UnknownMakeVideo", "inputs": {"fps": ["7", 0]}},
           "7": {"class_type": "IntMath", "inputs": {"a": 1, "b": 2, "op": "nope"}},
           "8": {"class_type": "UnknownStray", "inputs": {}}}
    errs, result = errors_of(doc)
    assert errs == {"2": [("missing_node_type", None)], "3": [("missing_node_type", None)],
                    "5": [("missing_node_type", None)], "6": [("missing_node_type", None)],
                    "7": [("value_not_in_list", "op")]}
    text = "\n".join(result.messages())
    assert all(f"Node type '{t}' is not known" in text
               for t in ("UnknownScale", "UnknownFilter", "UnknownSaveVideo", "UnknownMakeVideo"))
