"""Token dispatchers that carry each token's task along with the token.

Subclasses of Megatron-Core's all-to-all and all-gather dispatchers. All token movement stays
Megatron's; alongside it, every (token, expert) assignment carries a small integer code
``2 * task_slot + forced`` (see :mod:`nemo_neko.moe.stats`) through the same permutation and the
same collectives, so the rank that owns an expert counts what it actually receives, per task,
forced vs gate-chosen (after capacity dropping, across expert- and tensor-parallel ranks).

Shapes: T local tokens, E experts, L local experts, N received (token, expert) rows,
``C = 2 * task slots`` codes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from nemo_neko.compat.cpu import as_int_list, host_split_sizes
from nemo_neko.compat.megatron import (
    MoEAllGatherTokenDispatcher,
    MoEAlltoAllTokenDispatcher,
    gather_from_sequence_parallel_region,
    sort_chunks_by_idxs,
)
from nemo_neko.moe.stats import RoutingStats, assignment_codes
from nemo_neko.moe.tokens import TokenTasks


class _TaskCarrier:
    """State shared by both dispatchers: the current tokens' tasks and the stats sink."""

    routing_stats: RoutingStats | None = None
    _token_tasks: TokenTasks | None = None

    def set_token_tasks(self, token_tasks: TokenTasks | None) -> None:
        """Tasks of the tokens about to be dispatched (set by the layer every forward; None:
        count nothing, e.g. the no-grad first pass of a recomputed forward)."""
        self._token_tasks = token_tasks

    def _counting(self) -> bool:
        return self.routing_stats is not None and self._token_tasks is not None

    def _local_experts_L(self, device: torch.device) -> torch.Tensor:
        first = self.local_expert_indices[0]
        return torch.arange(first, first + self.num_local_experts, device=device)


class TaskAwareAlltoAllDispatcher(_TaskCarrier, MoEAlltoAllTokenDispatcher):
    """Megatron's all-to-all dispatcher, with task codes riding along every token."""

    _codes: torch.Tensor | None = None

    def _maybe_dtoh_and_synchronize(self, point, tokens_per_expert=None):
        # CPU shim: Megatron only turns split sizes into host arrays when they live on a GPU.
        tokens_per_expert = super()._maybe_dtoh_and_synchronize(point, tokens_per_expert)
        self.input_splits = host_split_sizes(self.input_splits)
        self.output_splits = host_split_sizes(self.output_splits)
        self.output_splits_tp = host_split_sizes(self.output_splits_tp)
        return tokens_per_expert

    def dispatch_preprocess(self, hidden_states, routing_map, probs):
        outputs = super().dispatch_preprocess(hidden_states, routing_map, probs)
        self._codes = self._permuted_codes(routing_map, probs) if self._counting() else None
        return outputs

    def _permuted_codes(self, routing_map_TE: torch.Tensor, probs_TE: torch.Tensor) -> torch.Tensor:
        """Codes in the order Megatron's permutation 1 puts the tokens: expert-major, ``[N]``."""
        tasks = self._token_tasks
        experts_E = torch.arange(self.num_experts, device=routing_map_TE.device)
        codes_TE = assignment_codes(tasks.slot_T, tasks.forced_expert_T, experts_E)
        # Rows Megatron adds itself (quantisation padding, capacity padding) carry no token.
        codes_TE = codes_TE.masked_fill(~routing_map_TE, -1)
        dispatch_map_TE = self.routing_map  # possibly padded by Megatron for quantisation
        if self.drop_and_pad:
            codes_TE = codes_TE.masked_fill(probs_TE == 0, -1)
            capacity = self.capacity
            order_EC = (
                dispatch_map_TE.to(torch.int8).t().argsort(dim=-1, descending=True, stable=True)
            )
            order_EC = order_EC[:, :capacity]
            return codes_TE.t().gather(1, order_EC).reshape(-1)
        return codes_TE.t().contiguous().masked_select(dispatch_map_TE.t().contiguous())

    def token_dispatch(self, permutated_local_input_tokens, permuted_probs):
        outputs = super().token_dispatch(permutated_local_input_tokens, permuted_probs)
        if self._codes is not None and self.ep_size > 1:
            self._codes = _all_to_all(
                self._codes, self.output_splits, self.input_splits, self.ep_group
            )
        return outputs

    def dispatch_postprocess(self, global_input_tokens, global_probs):
        tokens, tokens_per_expert, probs = super().dispatch_postprocess(
            global_input_tokens, global_probs
        )
        if self._codes is not None:
            self._count_received(self._codes, tokens_per_expert)
            self._codes = None
        return tokens, tokens_per_expert, probs

    def _count_received(self, codes_N: torch.Tensor, tokens_per_expert_L: torch.Tensor) -> None:
        if self.tp_size > 1:
            codes_N = gather_from_sequence_parallel_region(
                codes_N, group=self.tp_group, output_split_sizes=as_int_list(self.output_splits_tp)
            )
        if self.num_local_experts > 1:
            if self.drop_and_pad:
                codes_N = (
                    codes_N.view(self.tp_size * self.ep_size, self.num_local_experts, self.capacity)
                    .transpose(0, 1)
                    .reshape(-1)
                )
            else:
                codes_N, _ = sort_chunks_by_idxs(
                    codes_N,
                    self.num_global_tokens_per_local_expert.ravel(),
                    self.sort_input_by_local_experts,
                    fused=False,
                )
        counts_L = torch.as_tensor(tokens_per_expert_L, device=codes_N.device)
        expert_N = torch.repeat_interleave(
            self._local_experts_L(codes_N.device), counts_L, output_size=codes_N.numel()
        )
        self.routing_stats.add(expert_N, codes_N)


class TaskAwareAllGatherDispatcher(_TaskCarrier, MoEAllGatherTokenDispatcher):
    """Megatron's all-gather dispatcher, with each token's task gathered alongside it."""

    _gathered_tasks: torch.Tensor | None = None

    def token_dispatch(self, hidden_states, probs):
        outputs = super().token_dispatch(hidden_states, probs)
        self._gathered_tasks = None
        if self._counting():
            tasks = self._token_tasks
            tasks_T2 = torch.stack([tasks.slot_T, tasks.forced_expert_T], dim=1)
            if self.tp_size > 1 or self.ep_size > 1:
                tasks_T2 = gather_from_sequence_parallel_region(tasks_T2, group=self.tp_ep_group)
            self._gathered_tasks = tasks_T2
        return outputs

    def dispatch_postprocess(self, hidden_states, probs):
        outputs = super().dispatch_postprocess(hidden_states, probs)
        if self._gathered_tasks is not None:
            slot_T, forced_T = self._gathered_tasks.unbind(dim=1)
            experts_L = self._local_experts_L(slot_T.device)
            codes_TL = assignment_codes(slot_T, forced_T, experts_L)
            received_TL = self.local_map
            expert_TL = experts_L.unsqueeze(0).expand_as(codes_TL)
            self.routing_stats.add(expert_TL[received_TL], codes_TL[received_TL])
            self._gathered_tasks = None
        return outputs


def _all_to_all(
    tensor_N: torch.Tensor, output_splits, input_splits, group: dist.ProcessGroup
) -> torch.Tensor:
    """Variable-size all-to-all of a 1-D integer tensor (no autograd)."""
    output_sizes = as_int_list(output_splits)
    input_sizes = as_int_list(input_splits)
    if output_sizes is None:
        output = torch.empty_like(tensor_N)
    else:
        output = tensor_N.new_empty(sum(output_sizes))
    dist.all_to_all_single(
        output,
        tensor_N.contiguous(),
        output_split_sizes=output_sizes,
        input_split_sizes=input_sizes,
        group=group,
    )
    return output


DISPATCHERS = {
    "alltoall": TaskAwareAlltoAllDispatcher,
    "allgather": TaskAwareAllGatherDispatcher,
}
"""Task-aware dispatcher per Megatron ``moe_token_dispatcher_type``."""
