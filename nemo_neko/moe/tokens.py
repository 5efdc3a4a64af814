"""``TokenTasks``: what one MoE forward knows about its tokens' tasks, handed from the layer to
its router and its dispatcher.

Built once per forward by :class:`~nemo_neko.moe.layer.NeKoMoELayer` from the ids in scope
(:func:`~nemo_neko.moe.task_context.current_task_ids`) and the task -> expert table.
Shapes: T router tokens (``S_local * B``), K known tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenTasks:
    """Per router token: its task slot and the expert it is forced to.

    Attributes:
        slot_T: ``[T]`` int64, 0 = unlabelled, ``1 + t`` = task ``t`` (routing statistics rows).
        forced_expert_T: ``[T]`` int64, the task expert the router must choose, -1 = none (eval
            mode, forcing off, unlabelled tokens).
    """

    slot_T: torch.Tensor
    forced_expert_T: torch.Tensor

    @property
    def forcing(self) -> bool:
        """True when any token has a forced expert."""
        return bool((self.forced_expert_T >= 0).any())

    @classmethod
    def unlabelled(cls, num_tokens: int, device: torch.device) -> TokenTasks:
        """No task known (no ids in scope): slot 0, nothing forced."""
        none_T = torch.full((num_tokens,), -1, dtype=torch.long, device=device)
        return cls(slot_T=none_T + 1, forced_expert_T=none_T)

    @classmethod
    def from_ids(
        cls, ids_T: torch.Tensor, task_to_expert_K: torch.Tensor, force: bool
    ) -> TokenTasks:
        """Slots of ``ids_T`` (-1 = no task) and, when ``force``, each labelled token's expert."""
        slot_T = ids_T + 1
        if not force or task_to_expert_K.numel() == 0:
            return cls(slot_T=slot_T, forced_expert_T=torch.full_like(ids_T, -1))
        looked_up_T = task_to_expert_K[ids_T.clamp(min=0, max=task_to_expert_K.numel() - 1)]
        return cls(slot_T=slot_T, forced_expert_T=torch.where(ids_T >= 0, looked_up_T, -1))
