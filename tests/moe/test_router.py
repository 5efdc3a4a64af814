"""TaskGuidedRouter on real Megatron-Core (gloo, one rank): stock-identical when not forcing,
task-guided when forcing, with z-loss, capacity, expert bias and load-balancing losses."""

import math

import pytest
import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.router import TaskGuidedRouter
from nemo_neko.moe.task_context import router_token_task_ids
from nemo_neko.moe.tokens import TokenTasks
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.models import tiny_moe_config

S, B, H, E = 12, 3, 32, 8

ROUTER_CONFIGS = {
    "softmax_aux_z": dict(moe_z_loss_coeff=1e-3),
    "pre_softmax_seq_aux_scaled": dict(
        moe_router_pre_softmax=True,
        moe_router_load_balancing_type="seq_aux_loss",
        moe_router_topk_scaling_factor=2.0,
    ),
    "global_aux_top4": dict(moe_router_load_balancing_type="global_aux_loss", moe_router_topk=4),
    "sigmoid_expert_bias": dict(
        moe_router_score_function="sigmoid",
        moe_router_enable_expert_bias=True,
        moe_router_load_balancing_type="none",
        moe_aux_loss_coeff=0.0,
    ),
    "capacity_drop": dict(moe_expert_capacity_factor=1.0, moe_token_drop_policy="probs"),
}


def make_routers(config, routing):
    pg = mc.get_default_pg_collection()
    torch.manual_seed(0)
    stock = mc.TopKRouter(config=config, pg_collection=pg)
    ours = TaskGuidedRouter(config=config, pg_collection=pg, routing=routing)
    ours.load_state_dict(stock.state_dict())
    for router in (stock, ours):
        router.set_layer_number(1)
    return stock, ours


def layer_tasks(router, task_ids):
    """The ``TokenTasks`` a NeKo MoE layer hands its router for ``task_ids`` ``[B, S]``."""
    if task_ids is None:
        return None
    table = torch.tensor(router.task_routing.task_to_expert)
    force = router.training and router.task_routing.forcing
    return TokenTasks.from_ids(router_token_task_ids(task_ids), table, force)


def run_router(router, x, weights, task_ids=None):
    """Forward + backward of ``sum(probs * weights)``; returns outputs and gradients."""
    x = x.clone().requires_grad_(True)
    router.zero_grad()
    if isinstance(router, TaskGuidedRouter):
        with router.tasks_for_forward(layer_tasks(router, task_ids)):
            probs, routing_map = router(x)
    else:
        probs, routing_map = router(x)
    (probs * weights).sum().backward()
    return probs.detach(), routing_map, x.grad, router.weight.grad.clone()


def setup_case(name, seed):
    """Parallel state, config ``name``, routing for 3 tasks, inputs with unlabelled holes."""
    initialize_parallel(ParallelLayout())
    config = tiny_moe_config(**ROUTER_CONFIGS[name])
    routing = TaskRoutingConfig(task_to_expert=[3, 6, 1])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(S, B, H, generator=gen)
    weights = torch.randn(S * B, E, generator=gen)
    task_ids = torch.randint(-1, 3, (B, S), generator=gen)
    return config, routing, x, weights, task_ids


def _check_stock_identical(rank, world_size, name):
    config, routing, x, weights, task_ids = setup_case(name, seed=1)

    cases = {
        "eval mode, task ids in scope": (False, task_ids, True),
        "training, no task ids": (True, None, True),
        "training, forcing switched off": (True, task_ids, False),
    }
    for case, (training, ids, forcing) in cases.items():
        routing.forcing = forcing
        stock, ours = make_routers(config, routing)
        stock.train(training)
        ours.train(training)
        want = run_router(stock, x, weights)
        got = run_router(ours, x, weights, ids)
        for label, a, b in zip(("probs", "routing_map", "input grad", "weight grad"), got, want):
            assert torch.equal(a, b), f"{name} / {case}: {label} differs from the stock router"
        if training and stock.expert_bias is not None:
            assert torch.equal(ours.local_tokens_per_expert, stock.local_tokens_per_expert)


@pytest.mark.parametrize("name", sorted(ROUTER_CONFIGS))
def test_bit_identical_to_stock_router_when_not_forcing(name):
    run_distributed(_check_stock_identical, 1, name)


def _check_forcing(rank, world_size, name):
    config, routing, x, weights, task_ids = setup_case(name, seed=2)
    stock, ours = make_routers(config, routing)
    stock.train()
    ours.train()
    probs, routing_map, x_grad, w_grad = run_router(ours, x, weights, task_ids)
    stock_probs, stock_map, _, _ = run_router(stock, x, weights)

    ids_T = task_ids.t().reshape(-1)
    labelled = ids_T >= 0
    forced = torch.tensor(routing.task_to_expert)[ids_T.clamp(min=0)]
    k = config.moe_router_topk
    if config.moe_expert_capacity_factor is None:
        assert routing_map[labelled, forced[labelled]].all(), "a forced expert is missing"
        assert routing_map.sum(dim=1).eq(k).all()
        # unlabelled tokens: routed exactly as the stock router routes them
        assert torch.equal(routing_map[~labelled], stock_map[~labelled])
        assert torch.equal(probs[~labelled], stock_probs[~labelled])
    else:
        capacity = math.ceil(S * B * k / E * config.moe_expert_capacity_factor)
        assert routing_map.sum(dim=0).le(capacity).all(), "capacity exceeded"
        assert (probs[~routing_map] == 0).all()
    assert torch.isfinite(x_grad).all() and w_grad.abs().sum() > 0
    if ours.expert_bias is not None:  # expert-bias counters see the routing actually used
        assert torch.equal(ours.local_tokens_per_expert, routing_map.sum(dim=0).float())


@pytest.mark.parametrize("name", sorted(ROUTER_CONFIGS))
def test_forcing_in_training(name):
    run_distributed(_check_forcing, 1, name)


def _check_aux_losses(rank, world_size):
    initialize_parallel(ParallelLayout())
    coeff, z_coeff = 0.01, 1e-3
    config = tiny_moe_config(moe_aux_loss_coeff=coeff, moe_z_loss_coeff=z_coeff)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(S, B, H, generator=gen)
    weights = torch.randn(S * B, E, generator=gen)
    task_ids = torch.zeros(B, S, dtype=torch.long)  # every token labelled, all forced to expert 7

    values = {}
    for counts_forced in (True, False):
        mc.clear_aux_losses()
        routing = TaskRoutingConfig(task_to_expert=[7], aux_loss_counts_forced=counts_forced)
        stock, ours = make_routers(config, routing)
        ours.train()
        probs, routing_map, _, _ = run_router(ours, x, weights, task_ids)
        logits = (x.view(-1, H) @ ours.weight.detach().t()).float()
        scores = torch.softmax(logits, dim=-1)
        counted = (
            routing_map
            if counts_forced
            else torch.zeros_like(routing_map).scatter(
                1, torch.topk(scores, 2, dim=1).indices, True
            )
        )
        expected = (
            mc.switch_load_balancing_loss_func(
                probs=scores,
                tokens_per_expert=counted.sum(dim=0).float(),
                total_num_tokens=S * B,
                topk=2,
                num_experts=E,
                moe_aux_loss_coeff=coeff,
            )
            / coeff
        )
        logged = mc.local_aux_loss_values("load_balancing_loss")[0]
        torch.testing.assert_close(logged, expected, rtol=1e-5, atol=1e-7)
        values[counts_forced] = float(logged)
        z_expected = torch.logsumexp(logits, dim=-1).square().mean()
        torch.testing.assert_close(
            mc.local_aux_loss_values("z_loss")[0], z_expected, rtol=1e-5, atol=1e-7
        )
    # every token forced onto expert 7: the routing used is not the gate's plain top-k
    assert values[True] != values[False]


def test_load_balancing_loss_counts_the_routing_used_and_z_loss_runs():
    run_distributed(_check_aux_losses, 1)


def _check_incompatible(rank, world_size):
    initialize_parallel(ParallelLayout())
    pg = mc.get_default_pg_collection()
    routing = TaskRoutingConfig(task_to_expert=[0, 1])
    for overrides, message in [
        (dict(moe_router_load_balancing_type="sinkhorn", moe_aux_loss_coeff=0.0), "sinkhorn"),
    ]:
        with pytest.raises(ValueError, match=message):
            TaskGuidedRouter(config=tiny_moe_config(**overrides), pg_collection=pg, routing=routing)
    with pytest.raises(ValueError, match="mapped to expert 9"):
        TaskGuidedRouter(
            config=tiny_moe_config(),
            pg_collection=pg,
            routing=TaskRoutingConfig(task_to_expert=[9]),
        )
    # recomputation re-routes from the layer's queue (tests/train/test_recompute.py)
    TaskGuidedRouter(
        config=tiny_moe_config(
            recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1
        ),
        pg_collection=pg,
        routing=routing,
    )
    # forcing switched off: sinkhorn is Megatron's business again
    TaskGuidedRouter(
        config=tiny_moe_config(moe_router_load_balancing_type="sinkhorn", moe_aux_loss_coeff=0.0),
        pg_collection=pg,
        routing=TaskRoutingConfig(task_to_expert=[0], forcing=False),
    )


def test_options_that_cannot_be_forced_are_rejected():
    run_distributed(_check_incompatible, 1)
