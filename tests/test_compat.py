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


def _names(kind, after_forward=None):
    return [
        n
        for n in mc.PRIVATE_NAMES
        if n.kind == kind
        and mc.applies_to_installed(n)
        and (after_forward is None or n.after_forward == after_forward)
    ]


@pytest.mark.parametrize("kind", ["module", "class"])
def test_every_private_megatron_name_exists_on_this_version(kind):
    missing = [n for n in _names(kind) if not hasattr(mc.resolve_owner(n.owner), n.name)]
    assert not missing, f"megatron-core {mc.MCORE_VERSION} lacks {missing}"
    assert _names(kind), "the table lists names of this kind"


def _check_instance_names(rank, world_size):
    from nemo_neko.moe.task_context import task_routing_scope
    from nemo_neko.testing.models import build_moe_layer, tiny_moe_config

    initialize_parallel(ParallelLayout(), num_experts=8)
    for dispatcher in ("alltoall", "allgather"):
        config = tiny_moe_config(moe_token_dispatcher_type=dispatcher)
        layer = build_moe_layer(config, TaskRoutingConfig(task_to_expert=[1]))
        objects = (layer, layer.router, layer.token_dispatcher)
        checked = 0
        for after in (False, True):
            if after:
                layer.train()
                with task_routing_scope(torch.zeros(2, 4, dtype=torch.long)):
                    layer(torch.randn(4, 2, config.hidden_size))
            for name in _names("instance", after_forward=after):
                cls = mc.resolve_owner(name.owner)
                for owner in (o for o in objects if isinstance(o, cls)):  # none: other dispatcher
                    assert hasattr(
                        owner, name.name
                    ), f"megatron-core {mc.MCORE_VERSION} lacks {name}"
                    checked += 1
        assert checked >= 3, dispatcher


def test_every_private_megatron_instance_attribute_exists_on_real_layers():
    assert {n.owner.split(":")[1] for n in _names("instance")} >= {
        "TopKRouter",
        "MoEAlltoAllTokenDispatcher",
        "MoEAllGatherTokenDispatcher",
    }
    run_distributed(_check_instance_names, 1)
