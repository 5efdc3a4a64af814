"""Checkpoints: Megatron-Core distributed (sharded) checkpoints, made "latest" only when complete.

Layout under ``<run_dir>/checkpoints/``::

    step_00000120/            a complete checkpoint
        (Megatron dist-checkpoint files: model and optimizer, sharded, resharding-capable)
        trainer_state.pt      step, scheduler, data position, run layout (written by rank 0)
        rng/rank_00003.pt     each rank's RNG states (CPU, CUDA, Megatron's tracker)
    step_00000180.incomplete/ a save in progress (or interrupted): never read
    latest                    name of the newest complete checkpoint

A save writes into ``step_N.incomplete``; only after every rank has finished does rank 0 rename
it to ``step_N`` and then replace ``latest`` atomically (write + ``os.replace``). A crash at any
point leaves ``latest`` naming the previous complete checkpoint. Model and optimizer states are
saved in Megatron's fully reshardable format, so a checkpoint loads under another TP/PP/EP
layout (RNG states are then re-seeded instead of restored: they belong to the old ranks).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from nemo_neko.compat.megatron import (
    align_optimizer_state,
    optimizer_loading_template,
    separate_adam_steps,
)
from nemo_neko.model.checkpoint_files import (
    INCOMPLETE,
    CheckpointError,
    check_checkpoint,
    read_latest,
)
from nemo_neko.parallel.context import barrier as _barrier
from nemo_neko.parallel.context import global_rank as _rank
from nemo_neko.paths import CHECKPOINT_PREFIX, checkpoint_name

log = logging.getLogger(__name__)

SHARDED_METADATA = {
    "distrib_optim_sharding_type": "fully_reshardable",
    "singleton_local_shards": False,
    "chained_optim_avoid_prefix": True,
}


def unwrap(chunk):
    """The model inside Megatron's DDP wrapper (checkpoint keys never carry ``module.``)."""
    from nemo_neko.compat.megatron import DistributedDataParallel

    return chunk.module if isinstance(chunk, DistributedDataParallel) else chunk


def model_sharded_state_dict(chunks) -> dict:
    """The model chunks' sharded state dict (``model`` or ``model0``, ``model1``... for VPP)."""
    chunks = [unwrap(chunk) for chunk in chunks]
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict(metadata=SHARDED_METADATA)}
    return {
        f"model{i}": chunk.sharded_state_dict(metadata=SHARDED_METADATA)
        for i, chunk in enumerate(chunks)
    }


def rng_state() -> dict:
    from nemo_neko.compat.megatron import installed_rng_tracker

    tracker = installed_rng_tracker()
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": {k: v for k, v in tracker.get_states().items()} if tracker is not None else {},
    }


def set_rng_state(state: dict) -> None:
    from nemo_neko.compat.megatron import installed_rng_tracker

    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tracker = installed_rng_tracker()
    if tracker is not None and state.get("tracker"):
        tracker.set_states(dict(state["tracker"]))


def check_only_extra_states_absent(path, keys) -> None:
    """Raise unless every key the model asked for and ``path`` lacks is an ``_extra_state``.

    Transformer Engine layers keep FP8 metadata in ``_extra_state`` objects that local layers
    (and so checkpoints imported by ``nemo_neko.convert``) do not have; a model-only load
    (``train.init_from``, correction) may go without them, never without a tensor.
    """
    tensors = sorted(k for k in keys if "_extra_state" not in k)
    if tensors:
        raise RuntimeError(
            f"{path} lacks {len(tensors)} tensor(s) of the model, e.g. {tensors[:3]}"
        )


def optimizer_sharded_state(optimizer, model_sharded: dict, chunks, **kwargs) -> dict:
    """The optimizer's sharded state dict (collective); with frozen parameters on any rank,
    stacked layer keys stored per layer (:func:`~nemo_neko.compat.megatron.per_layer_keys`: frozen layers have no optimizer
    state, and a stacked key must be written whole)."""
    from nemo_neko.compat.megatron import per_layer_keys

    state = optimizer.sharded_state_dict(model_sharded, **kwargs)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # NCCL reduces GPU tensors only
    frozen = torch.tensor(
        [float(any(not p.requires_grad for chunk in chunks for p in unwrap(chunk).parameters()))],
        device=device,
    )
    if dist.is_initialized() and dist.get_world_size() > 1:  # one decision for every rank (PP)
        dist.all_reduce(frozen, op=dist.ReduceOp.MAX)
    return per_layer_keys(state) if frozen.item() else state


class Checkpointer:
    """Save and find complete checkpoints under ``root``."""

    def __init__(self, root: str | os.PathLike, keep: int = 2):
        self.root = Path(root)
        self.keep = keep

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None; :class:`CheckpointError` (one line naming
        it and what to do) when ``latest`` is empty or names no complete checkpoint."""
        return read_latest(self.root)

    def resolve_model_path(self) -> Path:
        """A model checkpoint to initialise from: ``root`` itself, or its ``latest``."""
        if (self.root / "latest").exists():
            return read_latest(self.root, shards=True)
        if not (self.root / "metadata.json").exists():
            raise CheckpointError(
                f"{self.root}: neither a distributed checkpoint nor a checkpoint folder with "
                f"'latest'"
            )
        check_checkpoint(self.root, trainer_state=False, shards=True)
        return self.root

    def clean_incomplete(self) -> None:
        """Remove interrupted saves (rank 0, collective barrier)."""
        if _rank() == 0 and self.root.exists():
            for stale in self.root.glob(f"*{INCOMPLETE}"):
                log.warning("removing interrupted checkpoint save %s", stale)
                shutil.rmtree(stale, ignore_errors=True)
        _barrier()

    def save(self, step: int, chunks, optimizer, trainer_state: dict) -> Path:
        """Collective: write checkpoint ``step`` and make it ``latest`` once complete."""
        from nemo_neko.compat.megatron import dist_checkpointing

        final = self.root / checkpoint_name(step)
        tmp = self.root / (final.name + INCOMPLETE)
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        sharded = model_sharded_state_dict(chunks)
        sharded["optimizer"] = optimizer_sharded_state(
            optimizer, sharded, chunks, metadata=SHARDED_METADATA
        )
        dist_checkpointing.save(sharded, str(tmp))  # into an empty folder
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), tmp / "rng" / f"rank_{_rank():05d}.pt")
        if _rank() == 0:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        _barrier()
        if _rank() == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(final.name + "\n")
            os.replace(pointer_tmp, self.root / "latest")
            self._prune(keep_name=final.name)
        _barrier()
        return final

    def _prune(self, keep_name: str) -> None:
        complete = sorted(
            p for p in self.root.glob(f"{CHECKPOINT_PREFIX}*") if not p.name.endswith(INCOMPLETE)
        )
        for old in complete[: max(0, len(complete) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def load(
        self, path: str | os.PathLike, chunks, optimizer=None, trainer_state_required: bool = True
    ) -> dict:
        """Collective: load model (and optimizer) states from ``path``; returns the trainer state.

        The caller restores the scheduler and data position from the returned dict. RNG states are
        restored when this rank's file exists and the world size matches the saving run.
        """
        from nemo_neko.compat.megatron import dist_checkpointing

        path = Path(path)
        state_file = path / "trainer_state.pt"
        check_checkpoint(path, trainer_state=trainer_state_required, shards=True)
        if trainer_state_required or state_file.exists():
            trainer_state = torch.load(state_file, weights_only=False)
        else:
            trainer_state = {}
        sharded = model_sharded_state_dict(chunks)
        if optimizer is not None:
            with optimizer_loading_template(optimizer):
                sharded["optimizer"] = optimizer_sharded_state(
                    optimizer, sharded, chunks, is_loading=True, metadata=SHARDED_METADATA
                )
        absent: set[str] = set()
        if optimizer is None:  # model weights only: tolerate absent _extra_state objects
            state, _, absent = dist_checkpointing.load(
                sharded, str(path), strict="return_unexpected"
            )
            check_only_extra_states_absent(path, absent)
        else:
            state = dist_checkpointing.load(sharded, str(path))
        for i, chunk in enumerate(chunks):
            loaded = state["model"] if len(chunks) == 1 else state[f"model{i}"]
            result = unwrap(chunk).load_state_dict(loaded, strict=not absent)
            check_only_extra_states_absent(path, result.missing_keys if absent else ())
        if optimizer is not None:
            optimizer.load_state_dict(align_optimizer_state(optimizer, state["optimizer"]))
            separate_adam_steps(optimizer)
        rng_file = path / "rng" / f"rank_{_rank():05d}.pt"
        world = dist.get_world_size() if dist.is_initialized() else 1
        if optimizer is None:
            pass  # model weights only (initialisation, correction): the run keeps its own seeds
        elif rng_file.exists() and trainer_state.get("world_size") == world:
            set_rng_state(torch.load(rng_file, weights_only=False))
        else:
            log.warning(
                "checkpoint %s was saved by another world layout: RNG states re-seeded", path
            )
        return trainer_state
