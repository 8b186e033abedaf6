"""Random and mutated workflow JSON thrown at validation: the only outcome is a validation result."""

import copy
import json

from engine_helpers import chain, engine_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph_runtime import validate
from graph_runtime.validation import ValidationResult

REG = engine_registry()
NAMES = sorted(REG) + ["Nope", ""]
INPUT_NAMES = ["value", "x", "a", "b", "op", "steps", "add", "fail", "template", "zz", ""]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=12)
node_ids = st.sampled_from(["1", "2", "3", "4", "out", "9"])
links = st.lists(st.one_of(node_ids, st.integers(-2, 5), json_leaf), min_size=0, max_size=3)
input_value = st.one_of(json_value, links, st.tuples(node_ids, st.integers(-1, 3)).map(list))
node = st.fixed_dictionaries(
    {"class_type": st.sampled_from(NAMES)},
    optional={"inputs": st.one_of(st.dictionaries(st.sampled_from(INPUT_NAMES), input_value, max_size=5), json_value),
              "_meta": json_value},
)
workflow = st.one_of(st.dictionaries(node_ids, st.one_of(node, json_value), max_size=6), json_value)


def check(doc):
    result = validate(doc, REG)
    assert isinstance(result, ValidationResult)
    if result.ok:
        assert result.plan is not None and result.plan.targets
    else:
        json.dumps(result.to_comfy(), allow_nan=False)  # always serialisable for the HTTP answer
        assert result.messages()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflow)
def test_random_documents(doc):
    check(doc)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_workflows(data):
    doc = copy.deepcopy(chain(5))
    for _ in range(data.draw(st.integers(1, 4))):
        nid = data.draw(st.sampled_from(sorted(doc)))
        action = data.draw(st.sampled_from(["drop_node", "set_input", "drop_input", "class", "replace"]))
        if action == "drop_node":
            doc.pop(nid, None)
        elif action == "set_input" and isinstance(doc.get(nid), dict):
            doc[nid].setdefault("inputs", {})[data.draw(st.sampled_from(INPUT_NAMES))] = data.draw(input_value)
        elif action == "drop_input" and isinstance(doc.get(nid), dict) and doc[nid].get("inputs"):
            doc[nid]["inputs"].pop(data.draw(st.sampled_from(sorted(doc[nid]["inputs"]))))
        elif action == "class" and isinstance(doc.get(nid), dict):
            doc[nid]["class_type"] = data.draw(st.sampled_from(NAMES))
        elif action == "replace":
            doc[nid] = data.draw(json_value)
        if not doc:
            break
    check(doc)
