"""Run a function on N ranks of a real ``torch.distributed`` world (gloo on CPU).

Used by the tests and benchmarks: every Megatron-Core check runs in fresh worker processes, so
process groups and Megatron's global parallel state never leak between tests::

    def check(rank, world_size):
        initialize_parallel(ParallelLayout(expert=2), num_experts=8)
        ...

    run_distributed(check, world_size=2)

Workers come from a fork server (Linux): a clean process started once, with Megatron-Core
imported, that forks each worker. Forking the caller itself is unsafe once it has run torch ops
on its OpenMP thread pool (the children deadlock); spawning fresh interpreters costs seconds of
imports per worker. ``fn`` must therefore be picklable (a module-level function). A failure on
any rank re-raises in the caller with that rank's traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_neko.parallel import free_port

BACKENDS = ("gloo",)
"""Backends the CPU test-suite runs on."""

_PRELOAD = ["torch", "nemo_neko.compat.megatron", "nemo_neko.moe", "nemo_neko.parallel"]
"""Modules the fork server imports once, so that workers start without import cost."""


def _worker(rank: int, fn: Callable, world_size: int, port: int, backend: str, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        from nemo_neko.parallel import destroy_parallel

        destroy_parallel()


def run_distributed(
    fn: Callable[..., Any],
    world_size: int = 2,
    *args: Any,
    backend: str = "gloo",
) -> None:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` new processes; raise on failure."""
    start_method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    if start_method == "forkserver":
        mp.set_forkserver_preload(_PRELOAD)
    mp.start_processes(
        _worker,
        args=(fn, world_size, free_port(), backend, args),
        nprocs=world_size,
        join=True,
        start_method=start_method,
    )


def single_rank_pg_collection():
    """A ``ProcessGroupCollection`` in which every group is this rank alone (EP=TP=CP=1).

    Collective: every rank of the world must call it. Used to build an unsharded reference
    layer next to a sharded one in the same processes.
    """
    from nemo_neko.compat.megatron import ProcessGroupCollection

    alone, _ = dist.new_subgroups(group_size=1)
    pgs = ProcessGroupCollection()
    for name in (
        "tp",
        "pp",
        "mp",
        "cp",
        "tp_cp",
        "ep",
        "expt_tp",
        "tp_ep",
        "tp_ep_pp",
        "dp",
        "dp_cp",
        "expt_dp",
        "tp_dp_cp",
    ):
        setattr(pgs, name, alone)
    return pgs
