"""Functions run on gloo worlds by the conversion tests (module level: the fork server imports
them by name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch


def convert(rank, world_size, what: str, source: str, out: str, kwargs: dict) -> None:
    """``import_hf`` / ``export_hf`` (``what``: import, upcycle, export) in a world of one."""
    from nemo_neko.convert.exporter import export_hf
    from nemo_neko.convert.importer import import_hf
    from nemo_neko.convert.upcycle import UpcycleConfig

    if what == "export":
        export_hf(source, out, progress=False, **kwargs)
    elif what == "upcycle":
        up = UpcycleConfig(**kwargs.pop("upcycle"))
        import_hf(source, out, upcycle=up, progress=False, **kwargs)
    else:
        import_hf(source, out, progress=False, **kwargs)


def import_without_extra_states(rank, world_size, source: str, out: str) -> None:
    """Import as usual, minus the ``_extra_state`` objects (as if Transformer Engine layers, which
    keep FP8 metadata there, were loading a checkpoint written by local layers)."""
    from nemo_neko.convert import megatron_io
    from nemo_neko.convert.importer import import_hf

    class WithoutExtraStates(megatron_io.ChunkIndex):
        def __init__(self, gpt):
            super().__init__(gpt)
            self.sharded = {k: v for k, v in self.sharded.items() if "_extra_state" not in k}

    megatron_io.ChunkIndex = WithoutExtraStates
    import_hf(source, out, progress=False)


def megatron_logits(source: str, layout, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, S, padded vocab]`` of the NeKo GPTModel built at ``layout`` and loaded from
    ``source`` (an imported folder or a run) the way ``train.init_from`` loads it."""
    from nemo_neko.compat import megatron as mc
    from nemo_neko.convert.exporter import resolve_source
    from nemo_neko.model.checkpoint import Checkpointer
    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.parallel import initialize_parallel
    from nemo_neko.testing.models import causal_mask

    found = resolve_source(source)
    model = dataclasses.replace(
        found.model, transformer_impl="local", params_dtype="float32", parallel=layout
    )
    parallel = initialize_parallel(
        layout, num_experts=model.num_experts or None, num_layers=model.num_layers
    )
    chunks = model.build(
        routing=TaskRoutingConfig(), parallel=parallel, max_sequence_length=64
    ).chunks
    Checkpointer(found.checkpoint).load(
        found.checkpoint, chunks, optimizer=None, trainer_state_required=False
    )
    gpt = chunks[0].eval()
    seq = ids.shape[1]
    with torch.no_grad():
        logits = gpt(ids, torch.arange(seq).expand_as(ids), causal_mask(seq))
    if layout.tensor > 1:
        logits = mc.tensor_parallel.gather_from_tensor_model_parallel_region(logits)
    return logits


def check_logits(rank, world_size, source: str, layout, ids, reference, atol: float) -> None:
    """Megatron's logits equal ``reference`` (``[B, S, vocab]``) within ``atol`` on every rank."""
    logits = megatron_logits(source, layout, ids)[..., : reference.shape[-1]]
    diff = (logits - reference).abs().max().item()
    assert diff <= atol, f"rank {rank}: max |megatron - reference| = {diff:.3e} > {atol:.0e}"


def save_logits(rank, world_size, source: str, layout, ids, out: str) -> None:
    logits = megatron_logits(source, layout, ids)
    if rank == 0:
        torch.save(logits, out)


def train_run(rank, world_size, config_path: str) -> None:
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import train

    train(load_run_config(config_path), Path(config_path).parent)


def _read_params(rank, world_size, source: str, names: list[str], out: str) -> None:
    from nemo_neko.convert.exporter import read_parameters

    torch.save(read_parameters(source, names), out)


def read_params(source, names: list[str], scratch) -> dict[str, torch.Tensor]:
    """Megatron parameters ``names`` of a checkpoint (read in a world of one)."""
    from nemo_neko.testing.distributed import run_distributed

    run_distributed(_read_params, 1, str(source), list(names), str(scratch))
    return torch.load(scratch)
