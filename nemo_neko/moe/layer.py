"""``NeKoMoELayer``: Megatron-Core's ``MoELayer`` with task-aware dispatch and routing statistics.

Megatron picks the token dispatcher from ``config.moe_token_dispatcher_type`` inside
``MoELayer.__init__``; this subclass swaps it for the task-aware subclass of the same kind
(:mod:`nemo_neko.moe.dispatchers`). Every forward, the layer reads the task ids in scope
(:func:`~nemo_neko.moe.task_context.current_task_ids`), turns them into one
:class:`~nemo_neko.moe.tokens.TokenTasks` (slot and forced expert per token; forcing only in
training with ``forcing`` on) and hands that object to its router and its dispatcher.
Everything else (experts, shared experts, combine) is Megatron's.

**Activation recomputation.** Megatron's recomputation (``recompute_granularity='full'``, or
``'selective'`` with ``'moe'``) runs a layer's forward twice: first under ``torch.no_grad()``
inside ``CheckpointFunction.forward`` (within the micro-batch's task scope), then again in the
backward pass, where no scope is active (with pipelining, other micro-batches' forwards may have
run in between; on GPU the backward even runs on autograd's device thread). The layer keeps the
router-ordered ids of each no-grad training forward in a FIFO queue and hands the oldest to the
recomputed forward, which therefore routes exactly as the first one (same forced experts, same
gate logits). Schedules run each layer's backwards in the order of its forwards (1F1B and
interleaved alike), so FIFO order is micro-batch order. Routing statistics are counted in the
recomputed pass only (Megatron applies its auxiliary losses there too), so nothing is counted
twice. :func:`pending_recomputes` and :func:`clear_recomputes` let the trainer check that a step
left nothing queued.

The layout is checked before Megatron builds anything, so a bad layout fails with the broken
rule instead of a bare ``assert``.
"""

from __future__ import annotations

from collections import deque

import torch

from nemo_neko.compat.megatron import MoELayer, get_default_pg_collection, set_token_dispatcher
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.dispatchers import DISPATCHERS
from nemo_neko.moe.router import TaskGuidedRouter
from nemo_neko.moe.stats import RoutingStats
from nemo_neko.moe.task_context import current_task_ids
from nemo_neko.moe.tokens import TokenTasks


def check_moe_layout(config, ep_size: int) -> None:
    """Raise ``ValueError`` for an MoE config the expert-parallel size cannot take."""
    num_experts = config.num_moe_experts
    if not num_experts:
        raise ValueError("num_moe_experts must be set for a NeKo MoE layer")
    if ep_size < 1 or num_experts % ep_size:
        raise ValueError(
            f"num_moe_experts={num_experts} is not divisible by expert_model_parallel_size="
            f"{ep_size}: every expert-parallel rank must own the same number of experts"
        )


class NeKoMoELayer(MoELayer):
    """MoE layer whose dispatcher carries task ids and counts what each expert receives.

    Args:
        config: Megatron ``TransformerConfig`` (MoE fields describe the layer).
        submodules: ``MoESubmodules`` (router = ``TaskGuidedRouter`` builder).
        layer_number: 1-based layer number (also set later by the transformer layer).
        pg_collection: process groups; the global parallel state when None.
        task_routing: NeKo routing settings (shared with the router).
    """

    def __init__(
        self,
        config,
        submodules=None,
        layer_number: int | None = None,
        pg_collection=None,
        *,
        task_routing: TaskRoutingConfig,
        **kwargs,
    ):
        if pg_collection is None:
            pg_collection = get_default_pg_collection()
        ep_size = pg_collection.ep.size() if pg_collection.ep is not None else 1
        check_moe_layout(config, ep_size)
        task_routing.validate(config.num_moe_experts, config.moe_router_topk)
        super().__init__(
            config=config,
            submodules=submodules,
            layer_number=layer_number,
            pg_collection=pg_collection,
            **kwargs,
        )
        self.task_routing = task_routing
        self.register_buffer(
            "task_to_expert",
            torch.tensor(task_routing.task_to_expert, dtype=torch.long),
            persistent=False,
        )
        self.routing_stats: RoutingStats | None = None
        self._recompute_ids: deque[torch.Tensor | None] = deque()
        """Router-ordered ids ``[S_local * B]`` of no-grad training forwards, oldest first."""
        self.replayed_forwards = 0
        """Recomputed forwards routed from the queue (a counter for logs and tests)."""
        if task_routing.collect_routing_stats:
            self._install_task_aware_dispatcher(pg_collection)

    def _install_task_aware_dispatcher(self, pg_collection) -> None:
        kind = self.config.moe_token_dispatcher_type
        if kind not in DISPATCHERS:
            raise ValueError(
                f"routing statistics need moe_token_dispatcher_type in {sorted(DISPATCHERS)}, got "
                f"{kind!r}; set collect_routing_stats=False to use it without statistics"
            )
        dispatcher = DISPATCHERS[kind](
            self.num_local_experts,
            self.local_expert_indices,
            config=self.config,
            pg_collection=pg_collection,
        )
        if self.use_shared_expert and self.shared_expert_overlap:
            dispatcher.set_shared_experts(self.shared_experts)
        self.routing_stats = RoutingStats(
            self.config.num_moe_experts, self.task_routing.num_task_slots
        )
        dispatcher.routing_stats = self.routing_stats
        set_token_dispatcher(self, dispatcher)

    def _forward_task_ids(self) -> tuple[torch.Tensor | None, bool]:
        """``(ids [S_local * B] or None, count this forward in the statistics)``.

        In training: a no-grad forward inside a task scope is the first pass of a recomputed
        (checkpointed) forward, so its ids are queued and it is not counted; a grad-enabled
        forward outside any scope with ids queued is that recomputation, routed from the queue.
        """
        ids_T = current_task_ids()
        if not self.training:
            return ids_T, True
        grad = torch.is_grad_enabled()
        if ids_T is not None and not grad:
            self._recompute_ids.append(ids_T)
            return ids_T, False
        if ids_T is None and grad and self._recompute_ids:
            self.replayed_forwards += 1
            return self._recompute_ids.popleft(), True
        return ids_T, True

    def token_tasks(
        self, num_tokens: int, device: torch.device, ids_T: torch.Tensor | None = None
    ) -> TokenTasks:
        """The tasks of this forward's ``num_tokens`` router tokens, from ``ids_T`` (router
        order ``[num_tokens]``) or, when not given, the ids in scope."""
        if ids_T is None:
            ids_T = current_task_ids()
        if ids_T is None:
            return TokenTasks.unlabelled(num_tokens, device)
        if ids_T.numel() != num_tokens:
            raise ValueError(
                f"task ids in scope cover {ids_T.numel()} tokens but MoE layer "
                f"{self.layer_number} sees {num_tokens}: were the ids given as this rank's [B, S] "
                f"micro-batch (CP-local), with sequence_parallel/tp_group matching the model?"
            )
        force = self.training and self.task_routing.forcing
        return TokenTasks.from_ids(ids_T.to(device), self.task_to_expert.to(device), force)

    def route(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """Megatron's routing, with this forward's tasks handed to the router and dispatcher."""
        ids_T, count = self._forward_task_ids()
        tasks = self.token_tasks(
            hidden_states.shape[0] * hidden_states.shape[1], hidden_states.device, ids_T
        )
        if self.routing_stats is not None:
            self.token_dispatcher.set_token_tasks(tasks if count else None)
        if not isinstance(self.router, TaskGuidedRouter):
            return super().route(hidden_states, padding_mask)
        with self.router.tasks_for_forward(tasks):
            return super().route(hidden_states, padding_mask)


def moe_layers(modules) -> list[NeKoMoELayer]:
    """The NeKo MoE layers inside ``modules`` (e.g. a rank's model chunks), in module order."""
    return [m for module in modules for m in module.modules() if isinstance(m, NeKoMoELayer)]


def pending_recomputes(modules) -> int:
    """Queued first-pass ids not yet consumed by a recomputed forward, over ``modules``' layers
    (0 after every complete forward-backward step)."""
    return sum(len(layer._recompute_ids) for layer in moe_layers(modules))


def clear_recomputes(modules) -> None:
    """Drop queued ids (a step that failed between its forward and its backward)."""
    for layer in moe_layers(modules):
        layer._recompute_ids.clear()
