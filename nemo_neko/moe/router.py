"""``TaskGuidedRouter``: Megatron-Core's ``TopKRouter`` with NeKo's task-guided forcing.

Plugged in through ``MoESubmodules.router`` (see :mod:`nemo_neko.moe.spec`). Behaviour:

* training, forcing on, task ids in scope (:func:`~nemo_neko.moe.task_context.task_routing_scope`):
  each labelled token goes to its task expert plus the gate's top-(k-1) among the other experts
  (:func:`~nemo_neko.moe.routing.task_guided_topk`); unlabelled tokens (id -1) get plain top-k.
  z-loss, expert capacity / token dropping, the expert-bias counters and the three
  load-balancing losses run as in ``TopKRouter.routing``; the load-balancing losses count the
  routing actually used unless ``aux_loss_counts_forced`` is off (then: Megatron's plain top-k);
* eval mode, no task ids, or forcing off: ``TopKRouter.routing`` itself runs, so outputs and
  gradients are bit-identical to the stock router.

Either way the router records each token's task slot (0 when no ids are in scope) and forced
expert (-1 when not forced) for the routing statistics (:attr:`last_token_tasks`), which the
NeKo MoE layer hands to its token dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_neko.compat.megatron import (
    TopKRouter,
    apply_router_token_dropping,
    compute_routing_scores_for_aux_loss,
)
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.routing import task_guided_topk
from nemo_neko.moe.task_context import current_task_ids


@dataclass
class TokenTasks:
    """What the dispatcher needs per router token: ``slot_T`` (0 = unlabelled, 1 + task id)
    and ``forced_expert_T`` (-1 = none). Both ``[T]`` int64 on the router's device."""

    slot_T: torch.Tensor
    forced_expert_T: torch.Tensor


def check_forcing_compatible(config, routing: TaskRoutingConfig) -> None:
    """Reject Megatron routing options that task-guided forcing cannot honour (ValueError)."""
    if not routing.forcing or routing.num_tasks == 0:
        return
    load_balancing = config.moe_router_load_balancing_type
    types = load_balancing if isinstance(load_balancing, list) else [load_balancing]
    for unsupported in ("sinkhorn", "quantile_balancing"):
        if unsupported in types:
            raise ValueError(
                f"moe_router_load_balancing_type={unsupported!r} chooses experts itself and cannot "
                f"be combined with task-guided forcing; use aux_loss/seq_aux_loss/global_aux_loss/"
                f"none, or set forcing=False"
            )
    if config.moe_router_group_topk:
        raise ValueError(
            "group-limited routing (moe_router_group_topk) is not supported with task-guided "
            "forcing: the forced expert's group would bypass the group limit"
        )
    if getattr(config, "moe_enable_routing_replay", False):
        raise ValueError(
            "moe_enable_routing_replay replays recorded routing; disable forcing for it"
        )
    if config.recompute_granularity == "full" or (
        config.recompute_granularity == "selective" and "moe" in (config.recompute_modules or [])
    ):
        raise ValueError(
            "activation recomputation that re-runs the MoE router (recompute_granularity='full' or "
            "selective 'moe') is not supported with task-guided forcing: the recomputed forward "
            "runs outside the micro-batch's task scope. Recompute other modules (e.g. "
            "recompute_modules=['core_attn', 'layernorm', 'moe_act'])"
        )


class TaskGuidedRouter(TopKRouter):
    """Top-k router that forces each labelled token's task expert during training."""

    def __init__(self, config, pg_collection=None, *, routing: TaskRoutingConfig, **kwargs):
        routing.validate(config.num_moe_experts, config.moe_router_topk)
        check_forcing_compatible(config, routing)
        super().__init__(config=config, pg_collection=pg_collection, **kwargs)
        self.task_routing = routing
        self.register_buffer(
            "task_to_expert",
            torch.tensor(routing.task_to_expert or [0], dtype=torch.long),
            persistent=False,
        )
        self.last_token_tasks: TokenTasks | None = None

    # ----------------------------------------------------------------------------------------

    def _token_tasks(self, num_tokens: int, device: torch.device) -> TokenTasks | None:
        """Task ids in scope for this forward, mapped to slots and forced experts."""
        ids_T = current_task_ids()
        if ids_T is None:
            return None
        if ids_T.numel() != num_tokens:
            raise ValueError(
                f"task ids in scope cover {ids_T.numel()} tokens but router layer "
                f"{self.layer_number} sees {num_tokens}: were the ids given as the full [B, S] "
                f"micro-batch, with sequence_parallel/tp_group/cp_group matching the model?"
            )
        ids_T = ids_T.to(device, non_blocking=True)
        if self.task_routing.num_tasks == 0:  # no task has an expert: nothing to force
            return TokenTasks(slot_T=ids_T + 1, forced_expert_T=torch.full_like(ids_T, -1))
        table_K = self.task_to_expert.to(device)
        looked_up_T = table_K[ids_T.clamp(min=0, max=table_K.numel() - 1)]
        forced_T = torch.where(ids_T >= 0, looked_up_T, -1)
        return TokenTasks(slot_T=ids_T + 1, forced_expert_T=forced_T)

    def forcing_active(self, token_tasks: TokenTasks | None) -> bool:
        """True when this forward applies task-guided forcing."""
        return (
            self.training
            and self.task_routing.forcing
            and self.task_routing.num_tasks > 0
            and token_tasks is not None
        )

    def routing(self, logits: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """Route ``logits`` ``[S, B, E]``; returns ``(probs [S*B, E], routing_map [S*B, E])``."""
        num_tokens = logits.shape[0] * logits.shape[1]
        token_tasks = self._token_tasks(num_tokens, logits.device)
        if not self.forcing_active(token_tasks):
            unforced_T = torch.full((num_tokens,), -1, dtype=torch.long, device=logits.device)
            slot_T = torch.zeros_like(unforced_T) if token_tasks is None else token_tasks.slot_T
            self.last_token_tasks = TokenTasks(slot_T=slot_T, forced_expert_T=unforced_T)
            return super().routing(logits, padding_mask=padding_mask)
        self.last_token_tasks = token_tasks
        return self._task_guided_routing(logits, token_tasks.forced_expert_T, padding_mask)

    def _task_guided_routing(
        self,
        logits: torch.Tensor,
        forced_expert_T: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ):
        """``TopKRouter.routing`` with the top-k choice replaced by the task-guided one."""
        seq_length, bsz = logits.shape[:2]
        logits = logits.view(-1, self.config.num_moe_experts)
        if padding_mask is not None:
            padding_mask = padding_mask.reshape(-1)

        logits = self.apply_z_loss(logits, padding_mask=padding_mask)

        probs, routing_map = task_guided_topk(
            logits,
            forced_expert_T,
            self.topk,
            score_function=self.score_function,
            use_pre_softmax=self.config.moe_router_pre_softmax,
            scaling_factor=self.config.moe_router_topk_scaling_factor,
            expert_bias_E=self.expert_bias,
        )
        used_map = routing_map

        if self.config.moe_expert_capacity_factor is not None:
            probs, routing_map = apply_router_token_dropping(
                probs,
                routing_map,
                router_topk=self.topk,
                capacity_factor=self.config.moe_expert_capacity_factor,
                drop_policy=self.config.moe_token_drop_policy,
                pad_to_capacity=self.config.moe_pad_expert_input_to_capacity,
            )

        if self.training and torch.is_grad_enabled() and self.is_aux_loss_enabled():
            map_for_aux, scores_for_aux = compute_routing_scores_for_aux_loss(
                logits,
                self.topk,
                self.score_function,
                fused=self.config.moe_router_fusion,
                padding_mask=padding_mask,
            )
            if self.task_routing.aux_loss_counts_forced:
                map_for_aux = used_map
                if padding_mask is not None:
                    map_for_aux = map_for_aux & (~padding_mask).unsqueeze(-1)
            with_padding = padding_mask is not None
            probs = self._apply_aux_loss(
                probs, scores_for_aux, map_for_aux, with_padding_mask=with_padding
            )
            probs = self._apply_seq_aux_loss(
                probs, scores_for_aux, map_for_aux, seq_length, bsz, with_padding_mask=with_padding
            )
            probs = self._apply_global_aux_loss(
                probs, scores_for_aux, map_for_aux, with_padding_mask=with_padding
            )

        self._apply_expert_bias(routing_map, padding_mask=padding_mask)
        return probs, routing_map
