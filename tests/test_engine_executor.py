"""The executor: partial execution, the Merkle cache and its policies, never-cached nodes, fingerprints,
interrupt, failures, events."""

import threading

import pytest
from engine_helpers import CALLS, Steps, chain, engine_registry

from graph_runtime import Executor, WorkflowValidationError
from graph_runtime.events import Recorder

REG = engine_registry()


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()


def ran(kind="CountingAdd"):
    return sorted(nid for (k, nid), n in CALLS.items() if k == kind for _ in range(n))


def diamond():
    return {
        "src": {"class_type": "CountingAdd", "inputs": {"x": 1, "add": 0}},
        "left": {"class_type": "CountingAdd", "inputs": {"x": ["src", 0], "add": 10}},
        "right": {"class_type": "CountingAdd", "inputs": {"x": ["src", 0], "add": 100}},
        "outL": {"class_type": "Collect", "inputs": {"value": ["left", 0]}},
        "outR": {"class_type": "Collect", "inputs": {"value": ["right", 0]}},
        "unused": {"class_type": "CountingAdd", "inputs": {"x": 5}},
    }


def test_runs_only_what_outputs_need():
    ex = Executor(REG)
    result = ex.run(diamond())
    assert result.ok
    assert result.outputs == {"outL": {"value": [11]}, "outR": {"value": [101]}}
    assert ran() == ["left", "right", "src"]  # "unused" feeds no output


def test_partial_execution_of_chosen_outputs():
    ex = Executor(REG)
    result = ex.run(diamond(), targets=["outL"])
    assert set(result.executed) == {"src", "left", "outL"}
    assert ran() == ["left", "src"]
    assert "outR" not in result.outputs


def test_cache_hit_on_identical_rerun():
    ex = Executor(REG)
    ex.run(diamond())
    CALLS.clear()
    result = ex.run(diamond())
    assert ran() == [] and result.executed == []
    assert set(result.cached) == {"src", "left", "right", "outL", "outR"}
    assert result.outputs["outL"] == {"value": [11]}  # cached output nodes still report their UI data


def test_changing_a_literal_reruns_only_that_node_and_its_descendants():
    ex = Executor(REG)
    ex.run(diamond())
    CALLS.clear()
    doc = diamond()
    doc["left"]["inputs"]["add"] = 20
    result = ex.run(doc)
    assert ran() == ["left"]
    assert set(result.executed) == {"left", "outL"}
    assert result.outputs["outL"] == {"value": [21]}


def test_changing_the_root_invalidates_everything_below():
    ex = Executor(REG)
    ex.run(chain(50))
    CALLS.clear()
    result = ex.run(chain(50, first=7))
    assert len(ran()) == 50
    assert result.outputs["out"] == {"value": [57]}


def test_node_ids_do_not_matter_for_the_key():
    ex = Executor(REG)
    ex.run({"a": {"class_type": "CountingAdd", "inputs": {"x": 3}}, "o": {"class_type": "Collect", "inputs": {"value": ["a", 0]}}})
    CALLS.clear()
    result = ex.run({"z": {"class_type": "CountingAdd", "inputs": {"x": 3}}, "q": {"class_type": "Collect", "inputs": {"value": ["z", 0]}}})
    assert ran() == [] and result.outputs == {"q": {"value": [4]}}


def test_keep_last_run_forgets_older_runs():
    ex = Executor(REG)
    a = {"1": {"class_type": "CountingAdd", "inputs": {"x": 1}}, "o": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    b = {"1": {"class_type": "CountingAdd", "inputs": {"x": 2}}, "o": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    ex.run(a)
    ex.run(b)
    CALLS.clear()
    ex.run(a)
    assert ran() == ["1"]
    assert len(ex.cache) == 2


def test_lru_policy_keeps_several_workflows():
    ex = Executor(REG, cache="lru:16")
    a = {"1": {"class_type": "CountingAdd", "inputs": {"x": 1}}, "o": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    b = {"1": {"class_type": "CountingAdd", "inputs": {"x": 2}}, "o": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    ex.run(a)
    ex.run(b)
    CALLS.clear()
    ex.run(a)
    ex.run(b)
    assert ran() == []
    small = Executor(REG, cache="lru:1")
    small.run(a)
    CALLS.clear()
    again = small.run(a)
    # one entry held only the output node: served from the cache, it needs nothing above it (ComfyUI's rule)
    assert ran() == [] and again.cached == ["o"] and again.executed == []
    small.run(b)
    CALLS.clear()
    small.run({"1": a["1"], "o": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})
    assert ran() == ["1"]  # a node that is not cached runs what it needs


def test_no_cache_policy_reruns_everything():
    ex = Executor(REG, cache="none")
    ex.run(diamond())
    CALLS.clear()
    ex.run(diamond())
    assert ran() == ["left", "right", "src"]


def test_bad_cache_policy_is_refused():
    with pytest.raises(ValueError, match="cache policy"):
        Executor(REG, cache="sometimes")


def test_never_cached_node_reruns_with_its_descendants():
    ex = Executor(REG)
    doc = {"r": {"class_type": "RandomInt", "inputs": {"min": 0, "max": 10}},
           "a": {"class_type": "CountingAdd", "inputs": {"x": ["r", 0]}},
           "k": {"class_type": "CountingAdd", "inputs": {"x": 1}},
           "o": {"class_type": "Collect", "inputs": {"value": ["a", 0]}},
           "o2": {"class_type": "Collect", "inputs": {"value": ["k", 0]}}}
    ex.run(doc)
    CALLS.clear()
    result = ex.run(doc)
    assert ran() == ["a"]
    assert "r" in result.executed and "k" in result.cached


def test_fingerprint_of_outside_state(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("one")
    ex = Executor(REG)
    doc = {"f": {"class_type": "FileStamp", "inputs": {"path": str(f)}}, "o": {"class_type": "Collect", "inputs": {"value": ["f", 0]}}}
    assert ex.run(doc).outputs["o"] == {"value": ["one"]}
    ex.run(doc)
    assert CALLS[("FileStamp", "f")] == 1
    f.write_text("two")
    assert ex.run(doc).outputs["o"] == {"value": ["two"]}
    assert CALLS[("FileStamp", "f")] == 2


def test_failure_names_the_node_and_the_cache_keeps_what_succeeded():
    ex = Executor(REG)
    rec = Recorder()
    doc = {"1": {"class_type": "CountingAdd", "inputs": {"x": 1}},
           "2": {"class_type": "Fails", "inputs": {"x": ["1", 0], "fail": True}},
           "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    result = ex.run(doc, handlers=[rec])
    assert result.status == "error"
    assert result.error["node_id"] == "2" and result.error["node_type"] == "Fails"
    assert result.error["exception_message"] == "asked to fail" and result.error["traceback"] == []
    assert result.error["executed"] == ["1"]
    assert rec.of("execution_error")[0]["node_id"] == "2"
    assert not rec.of("execution_success")
    doc["2"]["inputs"]["fail"] = False
    CALLS.clear()
    assert ex.run(doc).ok
    assert ran() == []  # node 1 came from the cache


def test_unexpected_exception_keeps_its_traceback():
    ex = Executor(REG)
    doc = {"2": {"class_type": "Fails", "inputs": {"crash": True}}, "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    result = ex.run(doc)
    assert result.error["exception_type"] == "RuntimeError"
    assert any("unexpected crash" in line for line in result.error["traceback"])


def test_invalid_workflow_raises_before_running():
    ex = Executor(REG)
    with pytest.raises(WorkflowValidationError) as info:
        ex.run({"1": {"class_type": "CountingAdd", "inputs": {"x": "no"}}, "o": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}})
    assert "node 1 (CountingAdd) input 'x'" in str(info.value)
    assert CALLS == {}


def test_event_sequence():
    ex = Executor(REG)
    rec = Recorder()
    doc = {"s": {"class_type": "Steps", "inputs": {"steps": 3}}, "o": {"class_type": "Collect", "inputs": {"value": ["s", 0]}}}
    result = ex.run(doc, handlers=[rec], prompt_id="p1")
    names = [e for e, _ in rec.events]
    assert names == ["execution_start", "execution_cached", "executing", "progress", "progress", "progress",
                     "executing", "executed", "execution_success", "executing"]
    assert all(d["prompt_id"] == "p1" for _, d in rec.events)
    assert [d["value"] for d in rec.of("progress")] == [1, 2, 3]
    assert rec.of("executing")[-1]["node"] is None
    assert rec.of("executed")[0] == {"node": "o", "display_node": "o", "output": {"value": [0]}, "prompt_id": "p1"}
    rec2 = Recorder()
    ex.run(doc, handlers=[rec2])
    assert rec2.of("execution_cached")[0]["nodes"] == ["s", "o"]
    assert result.ok


def test_a_failing_handler_does_not_break_the_run():
    def broken(event, data):
        raise ValueError("display went away")

    assert Executor(REG, handlers=[broken]).run(chain(3)).ok


def test_interrupt_from_another_thread_stops_at_the_next_check():
    Steps.gate, Steps.reached = threading.Event(), threading.Event()
    ex = Executor(REG)
    rec = Recorder()
    doc = {"s": {"class_type": "Steps", "inputs": {"steps": 100, "block_at": 3}},
           "after": {"class_type": "CountingAdd", "inputs": {"x": ["s", 0]}},
           "o": {"class_type": "Collect", "inputs": {"value": ["after", 0]}}}
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", ex.run(doc, handlers=[rec], prompt_id="p")))
    t.start()
    assert Steps.reached.wait(5)
    assert not ex.interrupt("another-prompt")
    assert ex.interrupt("p")
    Steps.gate.set()
    t.join(5)
    result = box["r"]
    assert result.status == "interrupted"
    assert result.error["node_id"] == "s"
    assert len(rec.of("progress")) == 4  # stopped at the first check after the interrupt
    assert ran() == []
    assert rec.of("execution_interrupted")
    Steps.gate = Steps.reached = None
    assert ex.run(doc).ok  # the next run is not affected


def test_wrong_number_of_outputs_is_an_error_of_the_node():
    from graph_runtime import Node, NodeInputs, NodeRegistry, Output

    class Bad(Node):
        class Inputs(NodeInputs):
            pass

        OUTPUTS = (Output("INT"), Output("INT"))

        def execute(self, inputs, ctx):
            return (1,)

    reg = engine_registry()
    reg.register(Bad)
    result = Executor(reg).run({"b": {"class_type": "Bad", "inputs": {}}, "o": {"class_type": "Collect", "inputs": {"value": ["b", 1]}}})
    assert result.status == "error" and "returned 1 output(s), declares 2" in result.error["exception_message"]
    assert isinstance(reg, NodeRegistry)


def test_linked_value_out_of_range_fails_clearly():
    doc = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5000}},
           "2": {"class_type": "Steps", "inputs": {"steps": ["1", 0]}},
           "o": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    result = Executor(REG).run(doc)
    assert result.status == "error" and result.error["node_id"] == "2"
    assert "steps" in result.error["exception_message"]


def test_hundred_thousand_node_chain_runs_without_recursion():
    doc = chain(100_000)
    ex = Executor(REG, cache="none")
    result = ex.run(doc)
    assert result.outputs["out"] == {"value": [100_000]}
