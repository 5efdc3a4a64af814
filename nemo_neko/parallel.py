"""Parallel layout (TP/PP/CP/EP) and process-group setup on Megatron-Core, GPU or CPU.

:class:`ParallelLayout` is checked against the world size and the model *before* anything is
built (:meth:`ParallelLayout.check` names the rule that was broken). :func:`initialize_parallel`
starts ``torch.distributed`` (NCCL on GPU, gloo on CPU, from torchrun's environment), applies
the CPU shims when CUDA is absent, and builds Megatron's parallel state and RNG streams.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    ) -> None:
        """Raise :class:`LayoutError` naming the first broken rule."""
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
        if num_experts is not None and self.tensor > 1 and not self.sequence_parallel:
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


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def initialize_parallel(
    layout: ParallelLayout,
    *,
    seed: int = 1234,
    backend: str | None = None,
    num_experts: int | None = None,
    num_layers: int | None = None,
) -> None:
    """Start torch.distributed (if needed) and Megatron's parallel state for ``layout``.

    Reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` when
    the default process group does not exist yet; a plain single process becomes a world of 1.
    """
    from nemo_neko.compat import megatron as mc
    from nemo_neko.compat.cpu import apply_cpu_shims

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend or default_backend(), rank=rank, world_size=world_size)
    layout.check(dist.get_world_size(), num_experts=num_experts, num_layers=num_layers)

    apply_cpu_shims()
    mc.prepare_runtime()
    mc.parallel_state.destroy_model_parallel()
    mc.parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        virtual_pipeline_model_parallel_size=layout.virtual_pipeline,
        context_parallel_size=layout.context,
        expert_model_parallel_size=layout.expert,
        expert_tensor_parallel_size=layout.expert_tensor,
    )
    seed_everything(seed)


def seed_everything(seed: int) -> None:
    """Seed the default generators and Megatron's model-parallel RNG streams."""
    from nemo_neko.compat import megatron as mc

    torch.manual_seed(seed)
    mc.model_parallel_cuda_manual_seed(seed)


def destroy_parallel() -> None:
    """Tear down Megatron's parallel state and the default process group."""
    from nemo_neko.compat import megatron as mc

    mc.parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
