"""Routing statistics: tokens each expert received, per task, forced vs gate-chosen.

The NeKo token dispatchers carry every token's task along with the token to the rank that owns
its expert; that rank counts what it receives. Counts are kept per layer as a flat tensor and
read as ``counts[e, s, c]``:

* ``e``: expert index (global), ``E`` of them;
* ``s``: task slot, 0 = unlabelled token, ``1 + t`` = task ``t`` (``S = num_tasks + 1``);
* ``c``: 0 = chosen by the gate, 1 = forced (the token's task expert).

A rank only fills the rows of its local experts; :func:`collect_routing_stats` all-reduces
(sums) over the expert-parallel group so every rank reads the whole ``[E, S, 2]`` table.
With k experts per token and no dropping, the table sums to tokens x k; in training with every
token labelled and k = 2, half of it is forced.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

GATE, FORCED = 0, 1


def assignment_codes(
    slot_T: torch.Tensor, forced_T: torch.Tensor, experts_X: torch.Tensor
) -> torch.Tensor:
    """Code of each (token, expert) pair: ``2 * slot + forced``. Returns ``[T, X]`` int64.

    Args:
        slot_T: task slot per token ``[T]`` (0 = unlabelled).
        forced_T: forced expert per token ``[T]`` (-1 = none).
        experts_X: the (global) expert indices of the columns ``[X]``.
    """
    forced_TX = forced_T.unsqueeze(1) == experts_X.unsqueeze(0)
    return slot_T.unsqueeze(1) * 2 + forced_TX.long()


class RoutingStats:
    """Per-layer counter of received tokens, flat ``[E * S * 2]`` int64 (see module docs)."""

    def __init__(self, num_experts: int, num_task_slots: int):
        self.num_experts = num_experts
        self.num_task_slots = num_task_slots
        self.counts: torch.Tensor | None = None

    @property
    def num_codes(self) -> int:
        return 2 * self.num_task_slots

    def add(self, expert_N: torch.Tensor, code_N: torch.Tensor) -> None:
        """Count received tokens: global expert ``[N]`` and code ``[N]`` (code < 0 = padding)."""
        valid_N = code_N >= 0
        flat_N = (expert_N * self.num_codes + code_N)[valid_N]
        binned = torch.bincount(flat_N, minlength=self.num_experts * self.num_codes)
        if self.counts is None or self.counts.device != binned.device:
            self.counts = torch.zeros_like(binned)
        self.counts += binned

    def local_table(self) -> torch.Tensor:
        """This rank's counts as ``[E, S, 2]`` (zeros when nothing was counted)."""
        if self.counts is None:
            return torch.zeros(self.num_experts, self.num_task_slots, 2, dtype=torch.long)
        return self.counts.view(self.num_experts, self.num_task_slots, 2)

    def reset(self) -> None:
        if self.counts is not None:
            self.counts.zero_()


def collect_routing_stats(
    layers: Iterable, group: dist.ProcessGroup | None = None, reset: bool = True
) -> dict[int, torch.Tensor]:
    """All-reduce every layer's counts over ``group`` (the EP group) in one collective.

    Collective: every rank of ``group`` must call it with its layers in the same order.

    Args:
        layers: NeKo MoE layers (anything with ``layer_number`` and ``routing_stats``).
        group: expert-parallel process group; ``None`` = no reduction (single EP rank).
        reset: zero the counters afterwards (one read per step).

    Returns:
        ``{layer_number: counts [E, S, 2] int64 on CPU}``.
    """
    layers = [layer for layer in layers if getattr(layer, "routing_stats", None) is not None]
    if not layers:
        return {}
    tables = [layer.routing_stats.local_table() for layer in layers]
    device = next((t.device for t in tables if t.device.type != "cpu"), torch.device("cpu"))
    stacked = torch.stack([t.to(device) for t in tables])
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(stacked, group=group)
    if reset:
        for layer in layers:
            layer.routing_stats.reset()
    stacked = stacked.cpu()
    return {layer.layer_number: stacked[i] for i, layer in enumerate(layers)}


def forced_share(counts_ES2: torch.Tensor) -> float:
    """Fraction of received tokens that were forced (0.0 when nothing was received)."""
    total = int(counts_ES2.sum())
    return float(counts_ES2[..., FORCED].sum()) / total if total else 0.0


def task_expert_shares(counts_ES2: torch.Tensor) -> torch.Tensor:
    """``[S, E]``: for each task slot, the share of its routed tokens each expert received."""
    per_task_SE = counts_ES2.sum(dim=2).t().double()
    totals_S1 = per_task_SE.sum(dim=1, keepdim=True).clamp(min=1)
    return per_task_SE / totals_S1
