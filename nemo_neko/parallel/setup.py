"""Process-group setup on Megatron-Core, GPU or CPU.

:func:`initialize_parallel` starts ``torch.distributed`` (NCCL on GPU, gloo on CPU, from
torchrun's environment), checks the layout against the world, applies the CPU shims when CUDA is
absent, builds Megatron's parallel state and RNG streams, and returns the
:class:`~nemo_neko.parallel.context.ParallelContext` every caller passes on.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from nemo_neko.parallel.context import ParallelContext
from nemo_neko.parallel.layout import ParallelLayout


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def initialize_parallel(
    layout: ParallelLayout,
    *,
    seed: int = 1234,
    backend: str | None = None,
    num_experts: int | None = None,
    num_layers: int | None = None,
    training: bool = True,
) -> ParallelContext:
    """Start torch.distributed (if needed) and Megatron's parallel state for ``layout``.

    Reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` when
    the default process group does not exist yet; a plain single process becomes a world of 1
    on a free loopback port (two of them on one machine never collide).

    ``training=False`` checks the layout by generation's rules (:meth:`ParallelLayout.check`).

    Returns:
        the context (groups, ranks) of this process.

    Raises:
        LayoutError: the layout does not fit the world or the model.
    """
    from nemo_neko.compat import megatron as mc
    from nemo_neko.compat.cpu import apply_cpu_shims

    if not dist.is_initialized():
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if world_size == 1 and "MASTER_PORT" not in os.environ:
            # one process without a launcher: an in-process store, no TCP port (a port picked
            # free can be taken before the store binds it: EADDRINUSE)
            dist.init_process_group(
                backend or default_backend(), store=dist.HashStore(), rank=0, world_size=1
            )
        else:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            dist.init_process_group(backend or default_backend(), rank=rank, world_size=world_size)
    layout.check(
        dist.get_world_size(), num_experts=num_experts, num_layers=num_layers, training=training
    )

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
    return ParallelContext.from_megatron(layout)


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


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
