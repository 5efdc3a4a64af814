"""Per-token task ids for the routers: an explicit scope, set per micro-batch.

The training step wraps each micro-batch's forward in :func:`task_routing_scope`::

    with task_routing_scope(batch["task_ids"], sequence_parallel=True, tp_group=tp):
        output = model(tokens, position_ids, attention_mask)

Inside the scope every ``NeKoMoELayer`` reads :func:`current_task_ids` and hands its router and
dispatcher the tokens' tasks; on exit (also on an exception) the ids are cleared, so nothing
leaks into the next micro-batch or into evaluation.

The ids are given ``[B, S]`` for the micro-batch *as this rank's model sees it*: with context
parallelism the batch (task ids included) has already been cut by Megatron's own
``get_batch_on_this_cp_rank`` together with the tokens, so the ids arrive CP-local. Here they are
only sliced as the hidden states the routers see are sliced further:

1. sequence parallelism: the embedding output ``[S, B, H]`` is scattered along S, so TP rank
   ``r`` holds rows ``[r * S / TP, (r + 1) * S / TP)`` of ``[S, B, H]``;
2. the router flattens ``[S_local, B, E]`` logits to ``[S_local * B, E]``: token index
   ``s * B + b``, which is the order of the flattened ``[S_local, B]`` ids returned here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.distributed as dist

_TASK_IDS: ContextVar[torch.Tensor | None] = ContextVar("nemo_neko_task_ids", default=None)


def current_task_ids() -> torch.Tensor | None:
    """Task id per router token, ``[S_local * B]`` int64 (-1 = no task), or None outside a scope."""
    return _TASK_IDS.get()


def router_token_task_ids(
    task_ids_BS: torch.Tensor,
    *,
    sequence_parallel: bool = False,
    tp_rank: int = 0,
    tp_size: int = 1,
    num_tasks: int | None = None,
) -> torch.Tensor:
    """Slice and flatten ``[B, S]`` task ids into the router's token order ``[S_local * B]``.

    Raises:
        ValueError: not 2-D, not an integer tensor, an id below -1 or at/above ``num_tasks``,
            or a sequence length the SP split cannot divide.
    """
    if task_ids_BS.dim() != 2:
        raise ValueError(f"task ids must be [batch, seq], got shape {tuple(task_ids_BS.shape)}")
    if task_ids_BS.dtype.is_floating_point or task_ids_BS.dtype == torch.bool:
        raise ValueError(f"task ids must be an integer tensor, got {task_ids_BS.dtype}")
    if task_ids_BS.numel() and task_ids_BS.device.type == "cpu":
        lowest, highest = int(task_ids_BS.min()), int(task_ids_BS.max())
        if lowest < -1:
            raise ValueError(f"task ids must be >= -1 (-1 = no task), found {lowest}")
        if num_tasks is not None and highest >= num_tasks:
            raise ValueError(
                f"task id {highest} is out of range: the routing config knows {num_tasks} tasks "
                f"(ids 0..{num_tasks - 1}, -1 = no task)"
            )
    ids_SB = task_ids_BS.long().t()
    if sequence_parallel and tp_size > 1:
        seq_len = ids_SB.shape[0]
        if seq_len % tp_size:
            raise ValueError(
                f"sequence length {seq_len} (per CP rank) must be divisible by "
                f"tensor_model_parallel_size={tp_size} under sequence parallelism"
            )
        chunk = seq_len // tp_size
        ids_SB = ids_SB[tp_rank * chunk : (tp_rank + 1) * chunk]
    return ids_SB.reshape(-1).contiguous()


def _rank_and_size(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


@contextlib.contextmanager
def task_routing_scope(
    task_ids_BS: torch.Tensor | None,
    *,
    sequence_parallel: bool = False,
    tp_group: dist.ProcessGroup | None = None,
    num_tasks: int | None = None,
) -> Iterator[torch.Tensor | None]:
    """Make ``task_ids_BS`` visible to every router inside the block.

    Args:
        task_ids_BS: ``[B, S]`` task id of every token of the micro-batch as this rank's model
            sees it (CP-local under context parallelism; -1 = no task), or None.
        sequence_parallel: the model scatters the sequence over ``tp_group``.
        tp_group: tensor-parallel group (its rank picks the SP slice).
        num_tasks: when given, ids at or above it are rejected.

    Yields:
        the router-ordered ids ``[S_local * B]`` (or None).
    """
    ids_T = None
    if task_ids_BS is not None:
        tp_rank, tp_size = _rank_and_size(tp_group)
        ids_T = router_token_task_ids(
            task_ids_BS,
            sequence_parallel=sequence_parallel,
            tp_rank=tp_rank,
            tp_size=tp_size,
            num_tasks=num_tasks,
        )
    token = _TASK_IDS.set(ids_T)
    try:
        yield ids_T
    finally:
        _TASK_IDS.reset(token)
