"""``TaskGuidedRouter``: Megatron-Core's ``TopKRouter`` with NeKo's task-guided forcing.

Plugged in through ``MoESubmodules.router`` (see :mod:`nemo_neko.moe.spec`). The override is the
selection step only: Megatron's ``TopKRouter.routing`` runs as it is (z-loss, score function,
scaling, capacity / token dropping, expert-bias counters, the three load-balancing losses), and
its top-k *selection* is replaced, through the selection hook Megatron exposes for routing replay
(``router_replay.get_replay_topk``, see :mod:`nemo_neko.compat.megatron`), by
:func:`~nemo_neko.moe.routing.select_with_forced`: each labelled token's task expert first, then
the gate's best among the other experts (torchtitan's ``_select_experts`` is the model).

The layer hands the router the forward's :class:`~nemo_neko.moe.tokens.TokenTasks` explicitly
(:meth:`TaskGuidedRouter.tasks_for_forward`, a scope around Megatron's ``MoELayer.route``):

* tokens with a forced expert (training, forcing on, ids in scope) are routed task-guided, and
  the load-balancing losses count the routing actually used (forced + gate choices) unless
  ``aux_loss_counts_forced`` is off (then: Megatron's plain top-k, its stock behaviour);
* otherwise (eval mode, no ids, forcing off) nothing is replaced: ``TopKRouter.routing`` runs
  untouched, so outputs and gradients are bit-identical to the stock router.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from nemo_neko.compat.megatron import TopKRouter, aux_loss_scaled_over_tp_cp
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.routing import select_with_forced
from nemo_neko.moe.tokens import TokenTasks


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
    if getattr(config, "moe_router_fusion", False):
        raise ValueError(
            "moe_router_fusion selects experts inside Transformer Engine's fused kernel, which "
            "task-guided forcing cannot reach; set moe_router_fusion=False or forcing=False"
        )


class _ForcedSelection:
    """Megatron's selection hook (the ``router_replay`` protocol) for one forward.

    ``get_replay_topk`` is what ``topk_routing_with_score_function`` calls instead of its own
    top-k; it puts each token's forced expert first and records the routing it chose
    (``used_TE``) for the load-balancing losses.
    """

    def __init__(self, forced_expert_T: torch.Tensor):
        self.forced_expert_T = forced_expert_T
        self.used_TE: torch.Tensor | None = None

    def get_replay_topk(self, scores, topk, num_groups=None, group_topk=None, compute_topk=None):
        values_TK, top_TK = select_with_forced(
            scores, self.forced_expert_T, topk, compute_topk, num_groups, group_topk
        )
        self.used_TE = torch.zeros_like(scores, dtype=torch.bool).scatter(1, top_TK, True)
        return values_TK, top_TK


class TaskGuidedRouter(TopKRouter):
    """Top-k router that forces each labelled token's task expert during training."""

    def __init__(self, config, pg_collection=None, *, routing: TaskRoutingConfig, **kwargs):
        routing.validate(config.num_moe_experts, config.moe_router_topk)
        check_forcing_compatible(config, routing)
        super().__init__(config=config, pg_collection=pg_collection, **kwargs)
        self.task_routing = routing
        self._tasks: TokenTasks | None = None
        self._selection: _ForcedSelection | None = None
        self._padding_T: torch.Tensor | None = None

    @contextlib.contextmanager
    def tasks_for_forward(self, token_tasks: TokenTasks | None) -> Iterator[None]:
        """Route the forwards inside the block with ``token_tasks`` (None: stock routing)."""
        self._tasks = token_tasks
        try:
            yield
        finally:
            self._tasks = None

    def routing(self, logits: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """Route ``logits`` ``[S, B, E]``; returns ``(probs [S*B, E], routing_map [S*B, E])``."""
        tasks = self._tasks
        if tasks is None or not tasks.forcing:
            return super().routing(logits, padding_mask=padding_mask)
        num_tokens = logits.shape[0] * logits.shape[1]
        if tasks.forced_expert_T.numel() != num_tokens:
            raise ValueError(
                f"router layer {self.layer_number} was given tasks for "
                f"{tasks.forced_expert_T.numel()} tokens but routes {num_tokens}"
            )
        self._selection = _ForcedSelection(tasks.forced_expert_T.to(logits.device))
        self._padding_T = None if padding_mask is None else padding_mask.reshape(-1)
        replay, self.router_replay = self.router_replay, self._selection
        try:
            return super().routing(logits, padding_mask=padding_mask)
        finally:
            self.router_replay = replay
            self._selection = None
            self._padding_T = None

    # -- load-balancing losses: count the routing actually used ---------------------------------

    def _map_for_aux(self, routing_map_TE: torch.Tensor) -> torch.Tensor:
        """The forced + gate routing when forcing ran and the losses count it, else Megatron's."""
        selection = self._selection
        if selection is None or selection.used_TE is None:
            return routing_map_TE
        if not self.task_routing.aux_loss_counts_forced:
            return routing_map_TE
        used_TE = selection.used_TE
        if self._padding_T is not None:
            used_TE = used_TE & (~self._padding_T).unsqueeze(-1)
        return used_TE

    def _apply_aux_loss(self, probs, scores_for_aux_loss, routing_map, *args, **kwargs):
        return super()._apply_aux_loss(
            probs, scores_for_aux_loss, self._map_for_aux(routing_map), *args, **kwargs
        )

    def _apply_seq_aux_loss(self, probs, scores_for_aux_loss, routing_map, *args, **kwargs):
        return super()._apply_seq_aux_loss(
            probs, scores_for_aux_loss, self._map_for_aux(routing_map), *args, **kwargs
        )

    def _apply_global_aux_loss(self, probs, scores_for_aux_loss, routing_map, *args, **kwargs):
        return super()._apply_global_aux_loss(
            probs, scores_for_aux_loss, self._map_for_aux(routing_map), *args, **kwargs
        )

    def attach_and_log_load_balancing_loss(
        self, activation, *args, valid_token_count=None, **kwargs
    ):
        """Megatron's, with the gradient scale of a per-token-loss run taken over the whole
        TP x CP group (the scaling of Megatron-Core 0.19, see
        :func:`~nemo_neko.compat.megatron.aux_loss_scaled_over_tp_cp`), so that TP with SP and
        CP weigh the load-balancing loss as one process does."""
        group = self.tp_cp_group.size()
        if self.calculate_per_token_loss and group > 1 and not aux_loss_scaled_over_tp_cp():
            count = valid_token_count if valid_token_count is not None else activation.shape[0]
            valid_token_count = count * group
        return super().attach_and_log_load_balancing_loss(
            activation, *args, valid_token_count=valid_token_count, **kwargs
        )
