"""``ParallelContext``: the process groups and ranks of one process, built once and passed in.

:func:`nemo_neko.parallel.initialize_parallel` starts Megatron-Core's parallel state and returns
the context; everything of nemo_neko that needs a group or a rank (the trainer, the model
factory, checkpoints, correction) takes it as an argument instead of reading Megatron's
``parallel_state`` globals. Reading those globals happens in one place,
:func:`nemo_neko.compat.megatron.parallel_groups`.

Groups (``torch.distributed`` process groups; a world of one has groups of one):

=========  =============================================================================
``tp``     tensor parallel (sequence-parallel slicing of the task ids)
``pp``     pipeline parallel (sums over stages: routing statistics, auxiliary losses)
``cp``     context parallel
``ep``     expert parallel (routing statistics are summed over it)
``dp``     data parallel without CP (which share of the global batch this rank reads)
``dp_cp``  data parallel with CP (losses are summed over it)
``expt_dp``  expert data parallel (routing statistics are summed over it too; in ``correct``,
           which share of the records this rank's model replica decodes)
``expt_mp``  expert tensor x expert model parallel (ETP x EP): in ``correct`` (PP = 1, ETP = TP),
           the ranks of one model replica, which decode the same batches in lockstep
=========  =============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from nemo_neko.parallel.layout import ParallelLayout


def _rank(group) -> int:
    return dist.get_rank(group) if group is not None else 0


def _size(group) -> int:
    return dist.get_world_size(group) if group is not None else 1


@dataclass(frozen=True)
class ParallelContext:
    """This process's place in the run's parallel layout.

    Attributes:
        layout: the sizes (TP/PP/VPP/CP/EP/ETP, SP).
        rank, world_size: in the default (global) group.
        tp, pp, cp, ep, dp, dp_cp, expt_dp, expt_mp: process groups (see the module docstring).
    """

    layout: ParallelLayout
    rank: int
    world_size: int
    tp: Any
    pp: Any
    cp: Any
    ep: Any
    dp: Any
    dp_cp: Any
    expt_dp: Any
    expt_mp: Any = None

    @classmethod
    def from_megatron(cls, layout: ParallelLayout) -> ParallelContext:
        """The context of Megatron's initialised parallel state (the one place that reads it)."""
        from nemo_neko.compat.megatron import parallel_groups

        return cls(
            layout=layout,
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            **parallel_groups(),
        )

    # -- ranks and sizes --------------------------------------------------------------------

    @property
    def tp_rank(self) -> int:
        return _rank(self.tp)

    @property
    def pp_rank(self) -> int:
        return _rank(self.pp)

    @property
    def pp_size(self) -> int:
        return _size(self.pp)

    @property
    def dp_rank(self) -> int:
        """Rank among data-parallel replicas (CP excluded): which share of the batch to read."""
        return _rank(self.dp)

    @property
    def dp_size(self) -> int:
        return _size(self.dp)

    @property
    def dp_cp_rank(self) -> int:
        return _rank(self.dp_cp)

    def is_first_stage(self, vp_stage: int | None = None) -> bool:
        """First pipeline stage (and, with interleaving, its first model chunk when given)."""
        return self.pp_rank == 0 and (vp_stage is None or vp_stage == 0)

    def is_last_stage(self, vp_stage: int | None = None) -> bool:
        """Last pipeline stage (and, with interleaving, its last model chunk when given)."""
        chunks = self.layout.virtual_pipeline or 1
        last_chunk = vp_stage is None or vp_stage == chunks - 1
        return self.pp_rank == self.pp_size - 1 and last_chunk

    @property
    def holds_losses(self) -> bool:
        """True on the last pipeline stage, where the losses are computed."""
        return self.is_last_stage()

    @property
    def is_logging_rank(self) -> bool:
        """The one rank that writes logs: last stage, first data-parallel replica, TP rank 0."""
        return self.holds_losses and self.dp_cp_rank == 0 and self.tp_rank == 0

    # -- collectives ------------------------------------------------------------------------

    def barrier(self) -> None:
        """Wait for every rank of the world."""
        barrier()


def global_rank() -> int:
    """This process's rank in the default group (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    """A barrier over the default group (nothing without ``torch.distributed``)."""
    if dist.is_initialized():
        dist.barrier()
