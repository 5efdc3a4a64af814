"""Per-token task ids: the scope, and slicing like the hidden states (CP, SP, token order)."""

import pytest
import torch

from nemo_neko.moe.task_context import (
    current_task_ids,
    router_token_task_ids,
    task_routing_scope,
)


def test_token_order_is_sequence_major_like_the_router():
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])  # [B=2, S=3]
    # hidden states are [S, B, H]; the router flattens them to s * B + b
    assert router_token_task_ids(ids).tolist() == [0, 3, 1, 4, 2, 5]


def test_sequence_parallel_takes_this_ranks_rows():
    ids = torch.arange(16).view(2, 8)  # [B=2, S=8]
    rank1 = router_token_task_ids(ids, sequence_parallel=True, tp_rank=1, tp_size=2)
    assert rank1.tolist() == [4, 12, 5, 13, 6, 14, 7, 15]
    no_sp = router_token_task_ids(ids, sequence_parallel=False, tp_rank=1, tp_size=2)
    assert no_sp.numel() == 16


def test_cp_local_ids_are_only_sliced_for_sequence_parallelism():
    # CP rank 1 of 2 holds chunks [2 3][4 5] of [0..7], cut with the batch (Megatron's split);
    # the scope takes those CP-local ids and only picks this TP rank's SP rows
    cp_local = torch.tensor([[2, 3, 4, 5]])
    both = router_token_task_ids(cp_local, sequence_parallel=True, tp_rank=1, tp_size=2)
    assert both.tolist() == [4, 5]


def test_scope_sets_and_clears_even_on_error():
    assert current_task_ids() is None
    with task_routing_scope(torch.tensor([[1, -1]])) as ids:
        assert current_task_ids() is ids
        assert ids.tolist() == [1, -1]
    assert current_task_ids() is None
    with pytest.raises(RuntimeError):
        with task_routing_scope(torch.tensor([[0]])):
            raise RuntimeError("forward failed")
    assert current_task_ids() is None
    with task_routing_scope(None):
        assert current_task_ids() is None


def test_bad_task_ids():
    with pytest.raises(
        ValueError, match="task id 3 is out of range: the routing config knows 3 tasks"
    ):
        router_token_task_ids(torch.tensor([[0, 3]]), num_tasks=3)
    with pytest.raises(ValueError, match=">= -1"):
        router_token_task_ids(torch.tensor([[-2]]))
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        router_token_task_ids(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        router_token_task_ids(torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="divisible by tensor_model_parallel_size=2"):
        router_token_task_ids(
            torch.zeros(1, 5, dtype=torch.long), sequence_parallel=True, tp_size=2
        )
