"""Task ids follow the hidden states when the sequence is split: tensor parallelism with sequence
parallelism, and context parallelism (2 processes, gloo).

Each token's hidden state carries its own task id in feature 0, so a task id sliced differently
from the hidden states would force the wrong expert and be caught."""

import pytest
import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.stats import collect_routing_stats
from nemo_neko.moe.task_context import task_routing_scope
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.models import build_moe_layer, tiny_moe_config

S, B, H = 16, 2, 32
TASK_TO_EXPERT = [5, 0, 3]


def labelled_batch(seed):
    """Full ``[B, S]`` task ids and ``[S, B, H]`` hidden states whose feature 0 is the task id."""
    gen = torch.Generator().manual_seed(seed)
    task_ids = torch.randint(-1, 3, (B, S), generator=gen)
    hidden = torch.randn(S, B, H, generator=gen)
    hidden[..., 0] = task_ids.t().float()
    return task_ids, hidden


def assert_forced_expert_chosen(layer, local_hidden):
    """Decode each local token's task from its hidden state; its expert must be chosen."""
    ids_T = local_hidden[..., 0].reshape(-1).round().long()
    tasks = layer.token_tasks(ids_T.numel(), local_hidden.device)
    assert torch.equal(tasks.slot_T, ids_T + 1), "task ids are not aligned with the hidden states"
    probs, routing_map = layer.route(local_hidden)
    labelled = ids_T >= 0
    forced = torch.tensor(TASK_TO_EXPERT)[ids_T.clamp(min=0)]
    assert routing_map[labelled, forced[labelled]].all(), "a forced expert is not among the chosen"
    assert labelled.any() and (~labelled).any()


def _check_tp_sp(rank, world_size, dispatcher):
    initialize_parallel(ParallelLayout(tensor=2, sequence_parallel=True), num_experts=8)
    config = tiny_moe_config(
        moe_token_dispatcher_type=dispatcher, tensor_model_parallel_size=2, sequence_parallel=True
    )
    routing = TaskRoutingConfig(task_to_expert=TASK_TO_EXPERT)
    layer = build_moe_layer(config, routing)
    layer.train()
    task_ids, hidden = labelled_batch(seed=11)
    local = hidden[rank * S // 2 : (rank + 1) * S // 2].clone().requires_grad_(True)  # [S/TP, B, H]
    tp_group = mc.parallel_state.get_tensor_model_parallel_group()
    with task_routing_scope(task_ids, sequence_parallel=True, tp_group=tp_group, num_tasks=3):
        out, _ = layer(local)
        out.sum().backward()
        assert_forced_expert_chosen(layer, local.detach())
    assert out.shape == local.shape and torch.isfinite(local.grad).all()
    counts = collect_routing_stats(
        [layer], group=mc.parallel_state.get_expert_model_parallel_group()
    )[1]
    # the (single) expert-parallel rank receives every token of the TP group, each twice (top-2)
    # counts from the first forward only: the second router call above bypassed the dispatcher
    assert int(counts.sum()) == S * B * 2
    assert int(counts[..., 1].sum()) == int((task_ids >= 0).sum())


@pytest.mark.parametrize("dispatcher", ["alltoall", "allgather"])
def test_tensor_parallel_2_with_sequence_parallel(dispatcher):
    run_distributed(_check_tp_sp, 2, dispatcher)


def _check_cp(rank, world_size):
    initialize_parallel(ParallelLayout(context=2), num_experts=8)
    layer = build_moe_layer(
        tiny_moe_config(context_parallel_size=2), TaskRoutingConfig(task_to_expert=TASK_TO_EXPERT)
    )
    layer.train()
    task_ids, hidden = labelled_batch(seed=12)
    # the batch cut once for this CP rank, task ids with the tokens (Megatron's own split):
    # the model's hidden states are then [S/CP, B, H] and the ids [B, S/CP]
    local = mc.context_parallel_batch_slice(
        {"task_ids": task_ids, "hidden": hidden.transpose(0, 1).contiguous()},
        mc.parallel_state.get_context_parallel_group(),
    )
    hidden_local = local["hidden"].transpose(0, 1).contiguous()
    with task_routing_scope(local["task_ids"], num_tasks=3):
        layer(hidden_local)
        assert_forced_expert_chosen(layer, hidden_local)


def test_context_parallel_2():
    run_distributed(_check_cp, 2)
