"""What one prompt may cost and how fast it stops: the Sampler refuses runs over the device's sampling-work
limit before any work (graph_runtime.limits), EmptyLatent refuses latent batches over the pixel limit before
allocating, and an interrupt stops a run inside the network call that is running, not after it."""

import copy

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from sampling_support import node_of, txt2img
from tiny_sd import single_thread

from graph_runtime.limits import LIMITS

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("limits"), services=services)


def test_a_huge_image_at_one_step_is_refused_before_sampling(executor):
    """The issue's 8192x8192 at 1 step: 1,024 x 1,024 latent pixels x 2 (CFG) > the CPU limit."""
    doc = txt2img("euler", steps=1)
    doc[node_of(doc, "EmptyLatent")]["inputs"].update(width=8192, height=8192)
    doc[node_of(doc, "LoadModel")]["inputs"]["device"] = "cpu"
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error"
    msg = res.error["exception_message"]
    assert res.error["node_type"] == "Sampler" and "max_sampling_work_cpu" in msg and "2,097,152" in msg
    assert f"{LIMITS.max_sampling_work_cpu:,}" in msg


def test_an_ordinary_run_is_admitted(executor):
    from nodes.sampling import sampling_work
    from schedulers.registry import SD15_SCHEDULER_CONFIG
    from schedulers.schedule import build_schedule

    sd15_512 = sampling_work(build_schedule("dpmpp_2m", SD15_SCHEDULER_CONFIG, 30), (1, 4, 64, 64), True)
    assert sd15_512 == 245_760 < LIMITS.max_sampling_work_cpu
    heun = build_schedule("heun", SD15_SCHEDULER_CONFIG, 10)
    assert sampling_work(heun, (2, 4, 8, 8), False) == len(heun.timesteps) * 2 * 64


def test_interrupt_stops_inside_the_running_network_call(executor, loaded):
    """A stop pressed while the UNet is halfway through one evaluation ends the run before that evaluation
    reaches its output layer."""
    unet = loaded.model.network
    seen = {"stopped": False, "out_after_stop": 0}

    def press_stop(module, args):
        if not seen["stopped"]:
            seen["stopped"] = True
            executor.interrupt()

    def output_layer(module, args):
        if seen["stopped"]:
            seen["out_after_stop"] += 1

    handles = [unet.down_blocks[1].register_forward_pre_hook(press_stop),
               unet.conv_out.register_forward_pre_hook(output_layer)]
    try:
        doc = copy.deepcopy(txt2img("euler", steps=3))
        with single_thread():
            res = executor.run(doc)
    finally:
        for h in handles:
            h.remove()
    assert seen["stopped"] and res.status == "interrupted", res.status
    assert seen["out_after_stop"] == 0


def test_interruptible_hooks_leave_no_trace(loaded):
    """The hooks change no numbers and are gone afterwards."""
    from nodes.interruption import interruptible

    unet = loaded.model.network
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor(500), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=e).sample
        calls = []
        with interruptible(unet, lambda: calls.append(1)):
            hooked = unet(x, t, encoder_hidden_states=e).sample
        after = unet(x, t, encoder_hidden_states=e).sample
        n = len(calls)
        unet(x, t, encoder_hidden_states=e)
    assert torch.equal(ref, hooked) and torch.equal(ref, after)
    assert n > 10 and len(calls) == n
