"""Typed settings of NeKo's task-guided routing, shared by every NeKo MoE layer of a model.

Megatron-Core's ``TransformerConfig`` keeps describing the MoE itself (experts, top-k, score
function, capacity, aux losses, dispatcher); :class:`TaskRoutingConfig` adds only what NeKo adds:
how datasets are assigned to experts, which expert each task is tied to, and three switches.

It is both the run config's ``routing`` group (``routing.assignment.mode=explicit``,
``routing.forcing=false``...) and what the layers receive: :meth:`TaskRoutingConfig.resolve`
fills ``task_to_expert`` and ``task_names`` from the training datasets, in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from nemo_neko.moe.assignment import TaskAssignmentConfig, assign_tasks_to_experts


@dataclass
class TaskRoutingConfig:
    """NeKo routing settings. Task id ``t`` is forced to expert ``task_to_expert[t]``."""

    assignment: TaskAssignmentConfig = field(default_factory=TaskAssignmentConfig)
    """How datasets are mapped to experts when the routing is resolved (:meth:`resolve`)."""

    task_to_expert: list[int] = field(default_factory=list)
    """Expert of each task id (index = task id). Empty: no task is known, nothing is forced.
    Filled by :meth:`resolve`; in a run config leave it empty and set ``assignment``."""

    task_names: list[str] = field(default_factory=list)
    """Dataset name of each task id, for logs and routing statistics (optional)."""

    forcing: bool = True
    """Force each labelled token's task expert in training. Off: stock top-k routing always."""

    aux_loss_counts_forced: bool = True
    """Load-balancing loss counts the routing actually used (forced + gate choices).

    Off: Megatron's stock behaviour, which counts the gate's plain top-k even when a token was
    forced elsewhere. The default balances what the experts really receive: with forcing, the
    task experts get every token of their task whatever the gate prefers, so penalising the
    plain top-k would push the gate against load it does not control.
    """

    collect_routing_stats: bool = True
    """Count, on the rank owning each expert, tokens received per (expert, task, forced/gate)."""

    @property
    def num_tasks(self) -> int:
        return len(self.task_to_expert)

    @property
    def num_task_slots(self) -> int:
        """Rows of the routing statistics: slot 0 = unlabelled tokens, slot 1 + t = task t."""
        return self.num_tasks + 1

    def validate(self, num_experts: int, topk: int) -> None:
        """Raise ``ValueError`` naming the broken rule; called before any layer is built."""
        if topk < 1 or topk > num_experts:
            raise ValueError(
                f"moe_router_topk={topk} must be in [1, num_moe_experts={num_experts}]"
            )
        for task, expert in enumerate(self.task_to_expert):
            if isinstance(expert, bool) or not isinstance(expert, int):
                raise ValueError(f"task_to_expert[{task}] must be an int, got {expert!r}")
            if not 0 <= expert < num_experts:
                name = f" ({self.task_names[task]!r})" if task < len(self.task_names) else ""
                raise ValueError(
                    f"task id {task}{name} is mapped to expert {expert}, outside "
                    f"[0, num_moe_experts={num_experts})"
                )
        if self.task_names and len(self.task_names) != len(self.task_to_expert):
            raise ValueError(
                f"task_names has {len(self.task_names)} entries but task_to_expert has "
                f"{len(self.task_to_expert)}"
            )

    def resolve(self, datasets: Sequence[str], num_experts: int) -> TaskRoutingConfig:
        """These settings with ``datasets`` (task id = position) mapped to experts.

        Raises:
            ValueError: the assignment cannot map the datasets (see
                :func:`~nemo_neko.moe.assignment.assign_tasks_to_experts`), or ``task_to_expert``
                was set by hand.
        """
        if self.task_to_expert or self.task_names:
            raise ValueError(
                "routing.task_to_expert / routing.task_names are derived from the training "
                "datasets; set routing.assignment (e.g. mode=explicit with a mapping) instead"
            )
        experts = assign_tasks_to_experts(datasets, num_experts, self.assignment)
        return dataclasses.replace(self, task_to_expert=experts, task_names=list(datasets))

    @classmethod
    def for_datasets(
        cls,
        datasets: Sequence[str],
        num_experts: int,
        assignment: TaskAssignmentConfig | None = None,
        **switches: bool,
    ) -> TaskRoutingConfig:
        """Map ``datasets`` (task id = position) to experts and return the routing settings."""
        settings = cls(assignment=assignment or TaskAssignmentConfig(), **switches)
        return settings.resolve(datasets, num_experts)
