"""Parallel layout (TP/PP/VPP/CP/EP/ETP): the sizes, and the rules a world must satisfy.

Pure Python (no torch import), so configs and dry runs can check a layout without building or
starting anything. :func:`nemo_neko.parallel.initialize_parallel` starts the process groups and
returns the :class:`~nemo_neko.parallel.context.ParallelContext` built from them.
"""

from __future__ import annotations

from dataclasses import dataclass


class LayoutError(ValueError):
    """A parallel layout the world size or the model cannot take."""


@dataclass
class ParallelLayout:
    """How one model replica is split over ranks."""

    tensor: int = 1
    """Tensor-parallel size (TP)."""
    pipeline: int = 1
    """Pipeline-parallel size (PP)."""
    virtual_pipeline: int | None = None
    """Model chunks per pipeline rank (interleaved 1F1B); None = not interleaved."""
    context: int = 1
    """Context-parallel size (CP)."""
    expert: int = 1
    """Expert-parallel size (EP)."""
    expert_tensor: int | None = None
    """Tensor-parallel size inside experts (ETP); None = same as TP."""
    sequence_parallel: bool = False
    """Scatter the sequence over the TP group outside the tensor-parallel regions."""

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // (self.tensor * self.pipeline * self.context)

    def check(
        self,
        world_size: int,
        *,
        num_experts: int | None = None,
        num_layers: int | None = None,
        training: bool = True,
    ) -> None:
        """Raise :class:`LayoutError` naming the first broken rule.

        ``training=False`` (generation): MoE with TP > 1 may run without sequence parallelism
        (Megatron-Core only refuses that combination in training)."""
        for name in ("tensor", "pipeline", "context", "expert"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LayoutError(f"{name} parallel size must be a positive int, got {value!r}")
        model_parallel = self.tensor * self.pipeline * self.context
        if world_size % model_parallel:
            raise LayoutError(
                f"world size {world_size} is not divisible by TP x PP x CP = {self.tensor} x "
                f"{self.pipeline} x {self.context} = {model_parallel}"
            )
        expert_tensor = self.expert_tensor or self.tensor
        expert_model_parallel = expert_tensor * self.expert * self.pipeline
        if world_size % expert_model_parallel:
            raise LayoutError(
                f"world size {world_size} is not divisible by ETP x EP x PP = {expert_tensor} x "
                f"{self.expert} x {self.pipeline} = {expert_model_parallel}"
            )
        if num_experts is not None and num_experts % self.expert:
            raise LayoutError(
                f"num_moe_experts={num_experts} is not divisible by expert parallel size "
                f"EP={self.expert}"
            )
        if self.expert > 1 and num_experts is None:
            raise LayoutError(f"expert parallel size EP={self.expert} needs an MoE model")
        if self.sequence_parallel and self.tensor == 1:
            raise LayoutError("sequence_parallel needs tensor parallel size TP > 1")
        if training and num_experts is not None and self.tensor > 1 and not self.sequence_parallel:
            raise LayoutError(
                "MoE with tensor parallelism needs sequence_parallel=True (Megatron-Core refuses "
                "to train MoE layers with TP > 1 otherwise)"
            )
        if self.virtual_pipeline is not None:
            if self.pipeline == 1:
                raise LayoutError("virtual_pipeline needs pipeline parallel size PP > 1")
            if num_layers is not None and num_layers % (self.pipeline * self.virtual_pipeline):
                raise LayoutError(
                    f"num_layers={num_layers} is not divisible by PP x VPP = "
                    f"{self.pipeline} x {self.virtual_pipeline}"
                )
        elif num_layers is not None and num_layers % self.pipeline:
            raise LayoutError(
                f"num_layers={num_layers} is not divisible by pipeline parallel size PP={self.pipeline}"
            )
