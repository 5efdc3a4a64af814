"""Expert parallelism: EP=2 equals EP=1 with the same weights, for both dispatchers (2 processes,
gloo): outputs, input/router/expert gradients and the routing statistics."""

import pytest
import torch
import torch.distributed as dist

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.stats import collect_routing_stats, forced_share
from nemo_neko.moe.task_context import task_routing_scope
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed, single_rank_pg_collection
from nemo_neko.testing.models import build_moe_layer, tiny_moe_config

S, B, H, E = 16, 2, 32, 8


def forward_backward(layer, x, task_ids, grad_out):
    x = x.clone().requires_grad_(True)
    with task_routing_scope(task_ids, num_tasks=3):
        out, _ = layer(x)
    (out * grad_out).sum().backward()
    return out.detach(), x.grad


def _check_ep2_equals_ep1(rank, world_size, dispatcher, capacity, pad=False):
    initialize_parallel(ParallelLayout(expert=2), num_experts=E)
    extra = {} if capacity is None else dict(moe_expert_capacity_factor=capacity)
    if pad:
        extra["moe_pad_expert_input_to_capacity"] = True
    routing = TaskRoutingConfig(task_to_expert=[6, 1, 3])
    reference_pg = single_rank_pg_collection()
    torch.manual_seed(0)  # identical reference weights on both ranks
    reference = build_moe_layer(
        tiny_moe_config(moe_token_dispatcher_type=dispatcher, **extra),
        routing,
        pg_collection=reference_pg,
    )
    sharded = build_moe_layer(
        tiny_moe_config(
            moe_token_dispatcher_type=dispatcher, expert_model_parallel_size=2, **extra
        ),
        routing,
    )
    assert sharded.num_local_experts == E // 2
    sharded.router.load_state_dict(reference.router.state_dict())
    offset = sharded.local_expert_indices[0]
    for i, expert in enumerate(sharded.experts.local_experts):
        expert.load_state_dict(reference.experts.local_experts[offset + i].state_dict())

    gen = torch.Generator().manual_seed(100 + rank)  # each rank has its own tokens
    x = torch.randn(S, B, H, generator=gen)
    task_ids = torch.randint(-1, 3, (B, S), generator=gen)
    grad_out = torch.randn(S, B, H, generator=gen)
    for layer in (reference, sharded):
        layer.train()

    want_out, want_dx = forward_backward(reference, x, task_ids, grad_out)
    got_out, got_dx = forward_backward(sharded, x, task_ids, grad_out)
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_dx, want_dx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        sharded.router.weight.grad, reference.router.weight.grad, rtol=1e-5, atol=1e-6
    )

    # an expert's gradient on its owner = the reference gradients summed over both ranks' tokens
    for ref_p in reference.experts.parameters():  # same order on every rank
        dist.all_reduce(ref_p.grad)
    for i, expert in enumerate(sharded.experts.local_experts):
        ref_expert = reference.experts.local_experts[offset + i]
        for (name, p), ref_p in zip(expert.named_parameters(), ref_expert.parameters()):
            torch.testing.assert_close(p.grad, ref_p.grad, rtol=1e-5, atol=1e-6, msg=name)

    ep_group = mc.parallel_state.get_expert_model_parallel_group()
    got_counts = collect_routing_stats([sharded], group=ep_group)[1]
    want_counts = collect_routing_stats([reference])[1]
    dist.all_reduce(want_counts)
    assert torch.equal(got_counts, want_counts)
    if capacity is None:
        assert int(got_counts.sum()) == world_size * S * B * 2
        labelled = torch.tensor(int((task_ids >= 0).sum()))
        dist.all_reduce(labelled)
        assert int(got_counts[..., 1].sum()) == int(labelled)


@pytest.mark.parametrize("dispatcher", ["alltoall", "allgather"])
def test_ep2_matches_ep1(dispatcher):
    run_distributed(_check_ep2_equals_ep1, 2, dispatcher, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "dispatcher,pad", [("alltoall", False), ("allgather", False), ("alltoall", True)]
)
def test_ep2_matches_ep1_with_token_dropping(dispatcher, pad):
    run_distributed(_check_ep2_equals_ep1, 2, dispatcher, 1.0, pad)


def _check_all_labelled_share(rank, world_size):
    initialize_parallel(ParallelLayout(expert=2), num_experts=E)
    routing = TaskRoutingConfig(task_to_expert=[0, 7])
    layer = build_moe_layer(tiny_moe_config(expert_model_parallel_size=2), routing)
    layer.train()
    task_ids = torch.full((B, S), rank)  # rank 0 feeds task 0, rank 1 task 1
    with task_routing_scope(task_ids):
        layer(torch.randn(S, B, H))
    counts = collect_routing_stats(
        [layer], group=mc.parallel_state.get_expert_model_parallel_group()
    )[1]
    assert int(counts.sum()) == world_size * S * B * 2
    assert forced_share(counts) == 0.5
    assert int(counts[0, 1, 1]) == S * B and int(counts[7, 2, 1]) == S * B


def test_statistics_reduced_over_expert_parallel_ranks():
    run_distributed(_check_all_labelled_share, 2)
