"""The Megatron-Core seam: spec rewriting for both spec styles, the CPU shims, the version."""

import functools

import pytest
import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.compat.cpu import as_int_list, host_split_sizes
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.router import TaskGuidedRouter
from nemo_neko.moe.spec import ROUTERS, neko_layer_spec, router_builder
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed


def test_supported_version():
    assert mc.MCORE_VERSION >= mc.MCORE_MIN_VERSION


@pytest.mark.parametrize("style", ["module_spec", "partial"])
def test_swap_moe_module_handles_both_spec_styles(style):
    submodules = mc.MoESubmodules(experts="experts", shared_experts="shared")
    if style == "module_spec":  # megatron-core 0.16
        spec = mc.ModuleSpec(module=mc.MoELayer, submodules=submodules, params={"a": 1})
    else:  # megatron-core 0.17+
        spec = functools.partial(mc.MoELayer, submodules=submodules)
    build_router = functools.partial(TaskGuidedRouter, routing=TaskRoutingConfig())
    swapped = mc.swap_moe_module(spec, NeKoMoELayer, build_router, {"task_routing": "cfg"})
    if style == "module_spec":
        assert swapped.module is NeKoMoELayer and swapped.params == {"a": 1, "task_routing": "cfg"}
        new_submodules = swapped.submodules
    else:
        assert swapped.func is NeKoMoELayer and swapped.keywords["task_routing"] == "cfg"
        new_submodules = swapped.keywords["submodules"]
    assert new_submodules.router is build_router and new_submodules.experts == "experts"
    assert submodules.router is mc.TopKRouter, "the original spec must not be modified"
    dense = mc.ModuleSpec(module=torch.nn.Linear)
    assert mc.swap_moe_module(dense, NeKoMoELayer, build_router, {}) is dense


def test_layer_spec_and_router_registry():
    spec = neko_layer_spec(TaskRoutingConfig(task_to_expert=[0]), 8, use_te=False)
    mlp = spec.submodules.mlp
    module = mlp.module if isinstance(mlp, mc.ModuleSpec) else mlp.func
    assert module is NeKoMoELayer
    assert set(ROUTERS) == {"task_guided", "topk"}
    with pytest.raises(ValueError, match="unknown router 'sinkhorn'; registered routers"):
        router_builder("sinkhorn", TaskRoutingConfig())


def test_split_sizes_become_host_ints():
    assert host_split_sizes(torch.tensor([1, 2])).tolist() == [1, 2]
    assert host_split_sizes(None) is None
    assert as_int_list(torch.tensor([3, 4])) == [3, 4]
    assert as_int_list(None) is None


def _check_cpu_rng_tracker(rank, world_size):
    initialize_parallel(ParallelLayout(), seed=5)
    tracker = mc.installed_rng_tracker()
    assert getattr(tracker, "runs_on_cpu", False)
    before = torch.get_rng_state()
    with tracker.fork():
        inside = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before), "fork must restore the default stream"
    with tracker.fork():
        inside_again = torch.rand(4)
    assert not torch.equal(inside, inside_again), "the forked stream must advance"
    initialize_parallel(ParallelLayout(), seed=5)  # re-seeding replays the stream
    with mc.installed_rng_tracker().fork():
        assert torch.equal(torch.rand(4), inside)


def test_cpu_rng_tracker_forks_cpu_streams():
    run_distributed(_check_cpu_rng_tracker, 1)
