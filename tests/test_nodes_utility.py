"""ComfyUI's utility nodes: primitives, StringConcatenate, PreviewAny, GetImageSize, ComfyMathExpression.

Each is checked through a workflow in ComfyUI's API format (what a saved ComfyUI workflow sends) and against
ComfyUI's declaration (input names, order, defaults, outputs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from nodes_support import make_executor, make_registry

from graph_runtime.validation import WorkflowValidationError
from nodes.utility import evaluate_expression, preview_text

REG = make_registry()


def run(tmp_path, doc: dict):
    result = make_executor(tmp_path).run(doc)
    return result


def info(name: str) -> dict:
    return REG.get(name).describe()


# --- primitives ------------------------------------------------------------------------------------------

def test_primitives_take_comfyuis_declarations():
    ints = info("PrimitiveInt")["input"]["required"]["value"]
    assert ints == ["INT", {"default": 0, "min": -(2**63 - 1), "max": 2**63 - 1, "control_after_generate": True}]
    floats = info("PrimitiveFloat")["input"]["required"]["value"]
    assert floats[1]["step"] == 0.1 and floats[1]["min"] == -(2**63 - 1) and floats[1]["max"] == 2**63 - 1
    assert "multiline" not in info("PrimitiveString")["input"]["required"]["value"][1]
    assert info("PrimitiveStringMultiline")["input"]["required"]["value"][1]["multiline"] is True
    names = {n: info(n)["display_name"] for n in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveBoolean",
                                                   "PrimitiveString", "PrimitiveStringMultiline")}
    assert names == {"PrimitiveInt": "Int", "PrimitiveFloat": "Float", "PrimitiveBoolean": "Boolean",
                     "PrimitiveString": "String", "PrimitiveStringMultiline": "String (Multiline)"}
    assert {info(n)["category"] for n in names} == {"utils/primitive"}


def test_primitives_feed_string_concatenate(tmp_path):
    doc = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a red"}},
           "2": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "ball\non grass"}},
           "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": ["2", 0],
                                                               "delimiter": ", "}},
           "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    result = run(tmp_path, doc)
    assert result.ok, result.error
    assert result.values["3"] == ("a red, ball\non grass",)
    assert result.outputs["4"] == {"text": ["a red, ball\non grass"]}


def test_string_concatenate_declaration_and_limit(tmp_path, monkeypatch):
    d = info("StringConcatenate")
    assert d["input_order"]["required"] == ["string_a", "string_b", "delimiter"]
    assert d["input"]["required"]["string_a"][1]["multiline"] is True
    assert d["input"]["required"]["delimiter"][1] == {"default": "", "multiline": False}
    assert d["display_name"] == "Concatenate Text" and d["output"] == ["STRING"]
    from graph_runtime.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_string_chars", 10)
    result = run(tmp_path, {"1": {"class_type": "StringConcatenate",
                                  "inputs": {"string_a": "abcdef", "string_b": "ghijk", "delimiter": ""}},
                            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert not result.ok and result.error["node_id"] == "1"
    assert "string_a / string_b" in result.error["exception_message"]
    assert "max_string_chars" in result.error["exception_message"]


# --- PreviewAny ------------------------------------------------------------------------------------------

def test_preview_any_text_follows_comfyui():
    assert preview_text("hi") == "hi"
    assert preview_text(3) == "3" and preview_text(2.5) == "2.5" and preview_text(True) == "True"
    assert preview_text(None) == "None"
    assert preview_text({"a": [1, 2]}) == json.dumps({"a": [1, 2]}, indent=4)
    text = preview_text(torch.arange(2000))  # over torch's summary threshold: six items at each edge
    head, tail = text.split("...")
    assert head.split() == ["tensor([", "0,", "1,", "2,", "3,", "4,", "5,"]
    assert tail.replace(",", " ").split() == ["1994", "1995", "1996", "1997", "1998", "1999])"]
    assert torch._tensor_str.PRINT_OPTS.edgeitems == 3  # the process-wide setting is put back


def test_preview_any_is_an_output_node_showing_a_tensor_shape(tmp_path):
    d = info("PreviewAny")
    assert d["output_node"] is True and d["input"]["required"]["source"] == ["*"]
    assert d["output"] == ["STRING"] and d["display_name"] == "Preview as Text"
    doc = {"1": {"class_type": "EmptyImage", "inputs": {"width": 5, "height": 3, "batch_size": 2, "color": 0}},
           "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
           "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}}}
    result = run(tmp_path, doc)
    assert result.ok, result.error
    assert result.values["2"] == (5, 3, 2)
    assert result.outputs["3"] == {"text": ["5"]} and result.outputs["4"] == {"text": ["2"]}


# --- GetImageSize ----------------------------------------------------------------------------------------

def test_get_image_size_declaration():
    d = info("GetImageSize")
    assert d["output"] == ["INT", "INT", "INT"] and d["output_name"] == ["width", "height", "batch_size"]
    assert list(d["input"]["required"]) == ["image"] and d["category"] == "image"


def test_get_image_size_refuses_a_latent(tmp_path):
    doc = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
           "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    with pytest.raises(WorkflowValidationError) as exc:
        run(tmp_path, doc)
    errs = exc.value.result.node_errors["2"]["errors"]
    assert errs[0]["type"] == "return_type_mismatch" and errs[0]["extra_info"]["input_name"] == "image"


# --- ComfyMathExpression ---------------------------------------------------------------------------------

def test_math_expression_declaration_is_comfyuis_autogrow():
    d = info("ComfyMathExpression")
    assert d["input_order"]["required"] == ["expression", "values"]
    assert d["input"]["required"]["expression"] == ["STRING", {"default": "a + b", "multiline": True}]
    kind, opts = d["input"]["required"]["values"]
    assert kind == "COMFY_AUTOGROW_V3"
    assert opts["template"]["names"] == list("abcdefghijklmnopqrstuvwxyz") and opts["template"]["min"] == 1
    assert opts["template"]["input"]["optional"]["value"][0] == "FLOAT,INT,BOOLEAN"
    assert d["output"] == ["FLOAT", "INT", "BOOLEAN"] and d["output_name"] == ["FLOAT", "INT", "BOOL"]
    assert d["display_name"] == "Math Expression"


def test_math_expression_over_linked_values(tmp_path):
    """ComfyUI's own template shape: a PrimitiveFloat into values.a, the INT output used downstream."""
    doc = {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": 5.0}},
           "2": {"class_type": "PrimitiveInt", "inputs": {"value": 1344}},
           "3": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
           "4": {"class_type": "ComfyMathExpression",
                 "inputs": {"expression": "floor(a * 24 / 8) * 8 + b / 2 + c + sum(values) - max(a, b)",
                            "values.a": ["1", 0], "values.b": ["2", 0], "values.c": ["3", 0]}},
           "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
           "6": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
           "7": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}}}
    result = run(tmp_path, doc)
    assert result.ok, result.error
    expected = math.floor(5.0 * 24 / 8) * 8 + 1344 / 2 + True + (5.0 + 1344 + True) - max(5.0, 1344)
    assert result.values["4"] == (float(expected), int(expected), True)
    assert result.outputs["6"] == {"text": [str(int(expected))]}


@pytest.mark.parametrize("expression,values,expected", [
    ("a + b", {"a": 1, "b": 2}, (3.0, 3, True)),
    ("a / 2", {"a": 7}, (3.5, 3, True)),
    ("-a / 2", {"a": 7}, (-3.5, -3, True)),  # int() truncates toward zero
    ("a - a", {"a": 4.25}, (0.0, 0, False)),
    ("a > b", {"a": 2, "b": 1}, (1.0, 1, True)),
    ("round(sqrt(a), 2) + pow(2, 10) + log2(8) + a % 3", {"a": 10}, (round(math.sqrt(10), 2) + 1024 + 3 + 1,
                                                                     int(round(math.sqrt(10), 2) + 1024 + 3 + 1),
                                                                     True)),
    ("a if a > 1 else b", {"a": 0.5, "b": 9}, (9.0, 9, True)),
    ("(2 ** 2000) % 7 + 2 ** 60000 // 2 ** 59999", {}, (6.0, 6, True)),  # 2 ** 2000 = 4 (mod 7)
])
def test_math_expression_values(expression, values, expected):
    assert evaluate_expression(expression, values) == expected


@pytest.mark.parametrize("expression,values,says", [
    ("", {}, "empty"),
    ("b + 1", {"a": 1}, "'b'"),
    ("__import__('os').system('true')", {}, "cannot be evaluated"),
    ("a.__class__", {"a": 1}, "cannot be evaluated"),
    ("open('x')", {}, "cannot be evaluated"),
    ("a / 0", {"a": 1}, "ZeroDivisionError"),
    ("pow(2, 5000)", {}, "exponent"),
    ("9 ** 9 ** 9", {}, "cannot be evaluated"),
    ("'text'", {}, "must give a number"),
    ("10.0 ** 400", {}, "cannot be evaluated"),
    ("a * 1e308 * 10", {"a": 1.0}, "non-finite"),
    ("log(-1)", {}, "ValueError"),
    ("4000000 ** 4000000 > 1", {}, "bits"),  # simpleeval allows it; it would take tens of seconds to build
    ("a ** 70000 > 1", {"a": 3}, "bits"),
    ("(2 ** 60000) * (2 ** 60000) > 1", {}, "the product"),
    ("1 << 100000 > 1", {}, "bits"),
    ("pow(a, 3999) > 1", {"a": 10 ** 20}, "bits"),
])
def test_math_expression_errors_name_the_input(expression, values, says):
    from graph_runtime import NodeError

    with pytest.raises(NodeError) as exc:
        evaluate_expression(expression, values)
    message = str(exc.value)
    assert message.startswith("expression: ") and says in message


def test_math_expression_error_in_a_run_names_node_and_input(tmp_path):
    doc = {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": 1.0}},
           "2": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a + q", "values.a": ["1", 0]}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}
    result = run(tmp_path, doc)
    assert not result.ok and result.error["node_id"] == "2"
    assert result.error["exception_message"].startswith("expression: 'a + q' cannot be evaluated")
    assert "'q'" in result.error["exception_message"] and "values given: a" in result.error["exception_message"]


def test_math_expression_refuses_a_string_link(tmp_path):
    doc = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "3"}},
           "2": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a", "values.a": ["1", 0]}},
           "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    with pytest.raises(WorkflowValidationError) as exc:
        run(tmp_path, doc)
    (err,) = exc.value.result.node_errors["2"]["errors"]
    assert (err["type"], err["extra_info"]["input_name"]) == ("return_type_mismatch", "values.a")


def test_math_expression_from_an_editor_file(tmp_path):
    """The node as ComfyUI's official templates save it (an Autogrow slot per value, the expression the only
    widget, a spare empty slot b) converts and runs; PrimitiveInt's control value is skipped."""
    from graph_runtime.ui_format import ui_to_api

    doc = {"last_node_id": 3, "last_link_id": 2, "version": 0.4, "links": [[1, 1, 0, 2, 0, "INT"],
                                                                         [2, 2, 1, 3, 0, "INT"]],
           "nodes": [
               {"id": 1, "type": "PrimitiveInt", "inputs": [], "widgets_values": [4097, "fixed"],
                "outputs": [{"name": "INT", "type": "INT", "links": [1]}]},
               {"id": 2, "type": "ComfyMathExpression", "widgets_values": ["a & ~1"],
                "inputs": [{"label": "a", "localized_name": "a", "name": "values.a", "type": "FLOAT,INT,BOOLEAN",
                            "link": 1},
                           {"localized_name": "b", "name": "values.b", "shape": 7, "type": "FLOAT,INT,BOOLEAN",
                            "link": None}],
                "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": None},
                            {"name": "INT", "type": "INT", "links": [2]},
                            {"name": "BOOL", "type": "BOOLEAN", "links": None}]},
               {"id": 3, "type": "PreviewAny", "inputs": [{"name": "source", "type": "*", "link": 2}],
                "widgets_values": []}]}
    api = ui_to_api(doc, REG)
    assert api["2"]["inputs"] == {"expression": "a & ~1", "values.a": ["1", 0]}
    assert api["1"]["inputs"] == {"value": 4097}
    result = run(tmp_path, api)
    assert result.ok, result.error
    assert result.outputs["3"] == {"text": ["4096"]}


def test_math_expression_takes_literal_values_in_the_api_format(tmp_path):
    """ComfyUI accepts a number or boolean typed into the prompt for a FLOAT,INT,BOOLEAN slot; anything else
    is refused naming the slot."""
    doc = {"1": {"class_type": "ComfyMathExpression",
                 "inputs": {"expression": "a * b + c", "values.a": 3, "values.b": 2.5, "values.c": True}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = run(tmp_path, doc)
    assert result.ok, result.error
    assert result.values["1"] == (8.5, 8, True)
    for bad in ("3", None, [1], {"x": 1}, 2**70):
        doc["1"]["inputs"]["values.a"] = bad
        with pytest.raises(WorkflowValidationError) as exc:
            run(tmp_path, doc)
        (err,) = exc.value.result.node_errors["1"]["errors"]
        assert err["extra_info"]["input_name"] == "values.a", bad
        assert err["type"] in ("invalid_input_type", "bad_linked_input"), bad


@pytest.mark.parametrize("ratio,mp,multiple,minimum,expected", [
    ("1:1 (Square)", 1.0, 8, 256, (1024, 1024)),
    ("16:9 (Widescreen)", 0.4, 32, 256, (864, 480)),  # round(863.5 / 32) = 27, round(485.7 / 32) = 15
    ("9:16 (Portrait Widescreen)", 1.0, 8, 256, (768, 1368)),
    ("21:9 (Ultrawide)", 0.1, 8, 256, (672, 288)),  # 496x208 is under 256: k = 32, the smallest fitting step
    ("3:2 (Photo)", 0.1, 64, 512, (768, 512)),  # 384x256 is under 512: steps 64 and 32, k = 256
])
def test_resolution_selector(ratio, mp, multiple, minimum, expected):
    from nodes.utility import ResolutionSelector

    inputs = ResolutionSelector.Inputs(aspect_ratio=ratio, megapixels=mp, multiple=multiple, minimum=minimum)
    assert ResolutionSelector().execute(inputs, None) == expected


def test_resolution_selector_declaration_and_editor_file():
    from graph_runtime.ui_format import ui_to_api

    d = info("ResolutionSelector")
    assert d["input_order"]["required"] == ["aspect_ratio", "megapixels", "multiple", "minimum"]
    assert d["input"]["required"]["aspect_ratio"][0][:3] == ["1:1 (Square)", "3:2 (Photo)", "4:3 (Standard)"]
    assert d["output_name"] == ["width", "height"]
    doc = {"links": [], "nodes": [{"id": 1, "type": "ResolutionSelector", "inputs": [],
                                   "widgets_values": ["16:9 (Widescreen)", 0.4, 32]}]}  # saved before minimum
    assert ui_to_api(doc, REG)["1"]["inputs"] == {"aspect_ratio": "16:9 (Widescreen)", "megapixels": 0.4,
                                                  "multiple": 32}


# --- text nodes ------------------------------------------------------------------------------------------

def text_node(name, **inputs):
    cls = REG.get(name)
    return cls().execute(cls.Inputs(**inputs), None)


def test_text_nodes_follow_python_as_comfyui_does():
    assert text_node("StringSubstring", string="hello world", start=-5, end=100) == ("world",)
    assert text_node("StringLength", string="héllo") == (5,)
    assert [text_node("CaseConverter", string="hello wORLD", mode=m)[0]
            for m in ("UPPERCASE", "lowercase", "Capitalize", "Title Case")] == [
        "HELLO WORLD", "hello world", "Hello world", "Hello World"]
    assert text_node("StringTrim", string="  x \n", mode="Left") == ("x \n",)
    assert text_node("StringReplace", string="a cat, a hat", find="at", replace="og") == ("a cog, a hog",)
    assert text_node("StringReplace", string="ab", find="", replace="-") == ("-a-b-",)
    assert text_node("StringContains", string="Red Ball", substring="red", case_sensitive=False) == (True,)
    assert text_node("StringContains", string="Red Ball", substring="red", case_sensitive=True) == (False,)
    assert text_node("StringCompare", string_a="Photo.PNG", string_b=".png", mode="Ends With",
                     case_sensitive=False) == (True,)
    assert text_node("StringCompare", string_a="a", string_b="A", mode="Equal", case_sensitive=True) == (False,)
    answer = 'Sure:\n```json\n{"prompt": "a red ball", "n": 2, "tags": ["x"]}\n```'
    assert text_node("JsonExtractString", json_string=answer, key="prompt") == ("a red ball",)
    assert text_node("JsonExtractString", json_string=answer, key="tags") == ("['x']",)  # str() of the value
    assert text_node("JsonExtractString", json_string="{bad {\"k\": 1}", key="k") == ("1",)  # the first valid one
    assert text_node("JsonExtractString", json_string="no json", key="k") == ("",)
    d = {n: REG.get(n).describe() for n in ("StringReplace", "StringCompare", "StringContains")}
    assert d["StringReplace"]["input_order"]["required"] == ["string", "find", "replace"]
    assert d["StringCompare"]["input"]["required"]["mode"][0] == ["Starts With", "Ends With", "Equal"]
    assert d["StringContains"]["output_name"] == ["contains"]


def test_text_nodes_are_bounded(monkeypatch):
    from graph_runtime import NodeError
    from graph_runtime.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_string_chars", 100)
    with pytest.raises(NodeError, match="replace: the text would be 1,000 characters"):
        text_node("StringReplace", string="a" * 10, find="a", replace="b" * 100)
    with pytest.raises(NodeError, match="json_string: no JSON object at the first 1000"):
        text_node("JsonExtractString", json_string="{" * 5000, key="k")


def test_number_convert(tmp_path):
    from graph_runtime import NodeError
    from nodes.utility import convert_number

    assert convert_number(True) == (1.0, 1) and convert_number(7) == (7.0, 7) and convert_number(-2.7) == (-2.7, -2)
    assert convert_number(" 42 ") == (42.0, 42) and convert_number("2.9") == (2.9, 2) and convert_number("1e3") == (
        1000.0, 1000)
    assert convert_number("12345678901234567890") == (1.2345678901234567e19, 12345678901234567890)  # exact int
    for bad, says in (("", "empty"), ("abc", "cannot convert 'abc'"), ("inf", "not a finite"), ([1], "got list")):
        with pytest.raises(NodeError, match=says):
            convert_number(bad)
    doc = {"1": {"class_type": "ComfyNumberConvert", "inputs": {"value": "3.5"}},
           "2": {"class_type": "PrimitiveString", "inputs": {"value": "8"}},
           "3": {"class_type": "ComfyNumberConvert", "inputs": {"value": ["2", 0]}},
           "4": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
           "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    result = run(tmp_path, doc)
    assert result.ok, result.error
    assert result.values["1"] == (3.5, 3) and result.values["3"] == (8.0, 8)
    assert info("ComfyNumberConvert")["input"]["required"]["value"] == ["INT,FLOAT,STRING,BOOLEAN"]


def test_regex_nodes_follow_comfyui():
    text = "Seed 42, steps 20\nseed 7"
    assert text_node("RegexMatch", string=text, regex_pattern=r"^seed \d+$", case_insensitive=True,
                     multiline=True, dotall=False) == (True,)
    assert text_node("RegexMatch", string=text, regex_pattern=r"^seed \d+$", case_insensitive=True,
                     multiline=False, dotall=False) == (False,)
    assert text_node("RegexMatch", string=text, regex_pattern="(", case_insensitive=True, multiline=False,
                     dotall=False) == (False,)  # an invalid pattern matches nothing
    extract = lambda mode, pattern, g=1: text_node(  # noqa: E731
        "RegexExtract", string=text, regex_pattern=pattern, mode=mode, case_insensitive=True, multiline=False,
        dotall=False, group_index=g)[0]
    assert extract("First Match", r"\d+") == "42"
    assert extract("All Matches", r"(\w+) (\d+)") == "Seed\nsteps\nseed"  # findall tuples: their first group
    assert extract("First Group", r"steps (\d+)") == "20" and extract("First Group", r"steps (\d+)", 2) == ""
    assert extract("All Groups", r"seed (\d+)") == "42\n7" and extract("All Groups", "[") == ""
    assert text_node("RegexReplace", string=text, regex_pattern=r"(\d+)", replace=r"<\1>", case_insensitive=True,
                     multiline=False, dotall=False, count=2) == ("Seed <42>, steps <20>\nseed 7",)
    d = REG.get("RegexReplace").describe()
    assert d["input_order"] == {"required": ["string", "regex_pattern", "replace"],
                                "optional": ["case_insensitive", "multiline", "dotall", "count"]}


def test_regex_nodes_are_bounded(monkeypatch):
    import nodes.utility as utility
    from graph_runtime import NodeError
    from graph_runtime.limits import LIMITS

    monkeypatch.setattr(utility, "REGEX_SECONDS", 0.2)
    with pytest.raises(NodeError, match=r"regex_pattern: '\(x\+x\+\)\+y' took more than 0.2 s"):
        text_node("RegexMatch", string="x" * 5000, regex_pattern=r"(x+x+)+y", case_insensitive=False,
                  multiline=False, dotall=False)
    with pytest.raises(NodeError, match="regex_pattern: '\\(' is not a valid pattern"):
        text_node("RegexReplace", string="a", regex_pattern="(", replace="", case_insensitive=True, multiline=False,
                  dotall=False, count=0)
    monkeypatch.setattr(LIMITS, "max_string_chars", 1000)
    with pytest.raises(NodeError, match="replace: the text would be over the limit of 1,000"):
        text_node("RegexReplace", string="a" * 100, regex_pattern="a", replace="b" * 50, case_insensitive=True,
                  multiline=False, dotall=False, count=0)
