"""NeKoMoELayer on one rank: the output is the hand-computed expert mixture; Qwen-style
(many experts, top-4, gated shared expert) works; routing statistics add up."""

import pytest
import torch
import torch.nn.functional as F

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.stats import FORCED, collect_routing_stats, forced_share
from nemo_neko.moe.task_context import task_routing_scope
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.models import build_moe_layer, tiny_moe_config

S, B, H = 10, 2, 32


def expert_by_hand(expert, x_NH):
    """SwiGLU expert from its raw weights: fc2(silu(gate) * up)."""
    gate, up = (x_NH @ expert.linear_fc1.weight.t()).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ expert.linear_fc2.weight.t()


def _check_mixture(rank, world_size, dispatcher):
    initialize_parallel(ParallelLayout())
    config = tiny_moe_config(
        moe_token_dispatcher_type=dispatcher,
        moe_aux_loss_coeff=0.0,
        moe_router_load_balancing_type="none",
    )
    routing = TaskRoutingConfig(task_to_expert=[5, 2])
    torch.manual_seed(0)
    layer = build_moe_layer(config, routing)
    assert isinstance(layer, NeKoMoELayer)
    layer.train()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(S, B, H, generator=gen)
    task_ids = torch.randint(-1, 2, (B, S), generator=gen)
    with task_routing_scope(task_ids):
        out, bias = layer(x)
        probs, routing_map = layer.route(x)
    assert bias is None
    x_TH = x.view(-1, H)
    want = torch.zeros_like(x_TH)
    for e, expert in enumerate(layer.experts.local_experts):
        rows = routing_map[:, e]
        if rows.any():
            want[rows] += probs[rows, e].unsqueeze(-1) * expert_by_hand(expert, x_TH[rows])
    torch.testing.assert_close(out.view(-1, H), want, rtol=1e-5, atol=1e-6)
    # the forced expert is one of the two in the sum
    ids_T = task_ids.t().reshape(-1)
    forced = torch.tensor([5, 2])[ids_T.clamp(min=0)]
    assert routing_map[ids_T >= 0, forced[ids_T >= 0]].all()


@pytest.mark.parametrize("dispatcher", ["alltoall", "allgather"])
def test_output_is_the_hand_computed_expert_mixture(dispatcher):
    run_distributed(_check_mixture, 1, dispatcher)


def _check_qwen_style(rank, world_size):
    initialize_parallel(ParallelLayout())
    num_experts, k = 60, 4
    config = tiny_moe_config(
        num_moe_experts=num_experts,
        moe_router_topk=k,
        moe_ffn_hidden_size=16,
        moe_shared_expert_intermediate_size=48,
        moe_shared_expert_gate=True,
    )
    routing = TaskRoutingConfig.for_datasets(["asr", "st", "mt", "ocr", "tec_gec"], num_experts)
    layer = build_moe_layer(config, routing)
    assert layer.shared_experts is not None
    layer.train()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(S, B, H, generator=gen, requires_grad=True)
    task_ids = torch.randint(0, 5, (B, S), generator=gen)
    with task_routing_scope(task_ids, num_tasks=5):
        out, _ = layer(x)
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert layer.shared_experts.linear_fc1.weight.grad is not None
    counts = collect_routing_stats([layer])[1]
    assert counts.shape == (num_experts, 6, 2)
    assert int(counts.sum()) == S * B * k
    assert forced_share(counts) == pytest.approx(1 / k)
    # forced tokens of task t all sit on the task's expert
    for task, expert in enumerate(routing.task_to_expert):
        assert int(counts[expert, task + 1, FORCED]) == int((task_ids == task).sum())


def test_qwen_style_top4_with_gated_shared_expert():
    run_distributed(_check_qwen_style, 1)


def _check_stats_modes(rank, world_size):
    initialize_parallel(ParallelLayout())
    config = tiny_moe_config()
    routing = TaskRoutingConfig(task_to_expert=[1, 4, 4])  # two tasks share expert 4
    layer = build_moe_layer(config, routing)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(S, B, H, generator=gen)
    task_ids = torch.randint(0, 3, (B, S), generator=gen)

    layer.train()
    with task_routing_scope(task_ids):
        layer(x)
    counts = collect_routing_stats([layer])[1]
    assert int(counts.sum()) == S * B * 2
    assert forced_share(counts) == pytest.approx(0.5)
    assert int(collect_routing_stats([layer])[1].sum()) == 0, "reading resets the counters"

    layer.eval()  # inference: plain top-2, nothing forced, tasks still counted
    with torch.no_grad(), task_routing_scope(task_ids):
        layer(x)
    counts = collect_routing_stats([layer])[1]
    assert int(counts.sum()) == S * B * 2 and int(counts[..., FORCED].sum()) == 0
    assert int(counts[:, 0].sum()) == 0, "every token was labelled"

    with torch.no_grad():  # no task scope at all: counted as unlabelled
        layer(x)
    counts = collect_routing_stats([layer])[1]
    assert int(counts[:, 0].sum()) == S * B * 2


def test_routing_statistics_in_training_and_inference():
    run_distributed(_check_stats_modes, 1)


def _check_bad_layout(rank, world_size):
    initialize_parallel(ParallelLayout(expert=2), num_experts=8)
    pg = mc.get_default_pg_collection()
    with pytest.raises(
        ValueError, match="num_moe_experts=5 is not divisible by expert_model_parallel_size=2"
    ):
        build_moe_layer(
            tiny_moe_config(num_moe_experts=5, expert_model_parallel_size=2),
            TaskRoutingConfig(task_to_expert=[0]),
            pg_collection=pg,
        )
    with pytest.raises(
        ValueError, match=r"task id 0 is mapped to expert 8, outside \[0, num_moe_experts=8\)"
    ):
        build_moe_layer(
            tiny_moe_config(expert_model_parallel_size=2),
            TaskRoutingConfig(task_to_expert=[8]),
            pg_collection=pg,
        )
    with pytest.raises(ValueError, match="task id 5 is out of range"):
        layer = build_moe_layer(
            tiny_moe_config(expert_model_parallel_size=2),
            TaskRoutingConfig(task_to_expert=[0]),
            pg_collection=pg,
        )
        with task_routing_scope(torch.full((B, S), 5), num_tasks=layer.task_routing.num_tasks):
            pass


def test_bad_configuration_fails_with_a_clear_message():
    run_distributed(_check_bad_layout, 2)
