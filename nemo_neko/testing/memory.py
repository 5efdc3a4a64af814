"""What a training rank really holds, measured, next to what the memory plan estimates.

Used by ``benchmarks/memory_plan.py`` and ``tests/model/test_memory_measured.py``:
:func:`measure_rank` builds a micro run's ``Trainer`` (``nemo_neko.testing.runs``), trains a
step, then measures on its rank

* parameters, gradients, optimizer state, exactly (:func:`measured_state`): the bytes of the
  model's parameters, of Megatron DDP's gradient buffers (``grad_data``), and of the optimizer's
  state after a step (Adam's moments, the fp32 main weights where they are copies rather than
  views of the model's);
* activations (:func:`peak_saved_bytes`): the peak, during a training step (every micro-batch,
  Megatron's own schedule), of the tensors autograd keeps for the backward pass
  (:class:`SavedTensorMeter`: ``torch.autograd.graph.saved_tensors_hooks``, each storage
  counted once by its ``data_ptr`` while some graph node holds it, parameters and gradient
  buffers left out);

and :func:`estimated_state` asks :func:`nemo_neko.model.memory_plan.plan_memory` for the same
figures of the same rank, layout, batch and settings.

Full recomputation is measured with Megatron's ``uniform`` method, one layer per checkpoint
(what the plan assumes), with task-guided forcing on: the MoE layers replay the first pass's
task ids in the recomputed forward (:mod:`nemo_neko.moe.layer`).
"""

from __future__ import annotations

import json
import statistics
import weakref
from pathlib import Path

FIGURES = ("weights", "grads", "optimizer", "activations")
"""What is measured and estimated, in bytes."""


class SavedTensorMeter:
    """Bytes of the storages autograd keeps for the backward pass, now and at the peak.

    Use ``with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack)``. Each saved
    tensor is wrapped in a holder whose collection (the graph node freeing it after its
    backward) releases its storage; a storage held by several nodes counts once. Storages in
    ``excluded`` (parameters, gradient buffers) are not counted.
    """

    def __init__(self, excluded: set[int]):
        self.excluded = excluded
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = 0

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if key in self.excluded or size == 0:
            return tensor
        entry = self.live.setdefault(key, [0, size])
        if entry[0] == 0:
            self.current += size
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        holder = _Held(tensor)
        weakref.finalize(holder, self._release, key)
        return holder

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Held) else packed

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]


class _Held:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def _grad_buffers(trainer) -> list:
    return [b.grad_data for c in trainer.chunks for b in c.buffers + c.expert_parallel_buffers]


def measured_state(trainer) -> dict[str, int]:
    """Exact bytes of the parameters, DDP gradient buffers and optimizer state of this rank."""
    from nemo_neko.compat import megatron as mc

    params = {id(p): p for chunk in trainer.chunks for p in chunk.parameters()}
    model_storages = {p.untyped_storage().data_ptr() for p in params.values()}
    weights = sum(p.numel() * p.element_size() for p in params.values())
    grads = sum(g.numel() * g.element_size() for g in _grad_buffers(trainer))
    optimizer, seen = 0, set()
    for torch_optimizer in mc.torch_optimizers(trainer.optimizer):
        tensors = [p for group in torch_optimizer.param_groups for p in group["params"]]
        tensors += [t for state in torch_optimizer.state.values() for t in state.values()]
        for tensor in tensors:
            if not hasattr(tensor, "untyped_storage") or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if tensor.untyped_storage().data_ptr() not in model_storages:
                optimizer += tensor.numel() * tensor.element_size()
    return {"weights": weights, "grads": grads, "optimizer": optimizer}


def peak_saved_bytes(trainer, steps: int) -> int:
    """Median over ``steps`` training steps of the peak saved-for-backward bytes."""
    import torch

    excluded = {p.untyped_storage().data_ptr() for c in trainer.chunks for p in c.parameters()}
    excluded |= {g.untyped_storage().data_ptr() for g in _grad_buffers(trainer)}
    peaks = []
    for _ in range(steps):
        meter = SavedTensorMeter(excluded)
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            trainer.train_step()
        peaks.append(meter.peak)
    return int(statistics.median(peaks))


def estimated_state(trainer) -> dict[str, float]:
    """The memory plan's figures for this rank's pipeline stage, from the trainer's config."""
    import torch.distributed as dist

    from nemo_neko.model.memory_plan import TrainingShape, plan_memory
    from nemo_neko.train.freeze import frozen

    run = trainer.run
    model = run.model
    shape = TrainingShape(
        world_size=dist.get_world_size(),
        seq_length=run.data.seq_length,
        micro_batch_size=trainer.plan.micro_batch_size,
        micro_batches=trainer.plan.micro_batches_per_step,
        vocab=trainer.model.vocab_size,
        distributed_optimizer=run.train.use_distributed_optimizer,
        recompute=str(model.recompute_granularity) if model.recompute_granularity else None,
        recompute_modules=tuple(model.recompute_modules),
        frozen=lambda name: frozen(name, run.train) is not None,
    )
    stage = plan_memory(model, shape).ranks[trainer.parallel.pp_rank]
    return {name: getattr(stage, name) for name in FIGURES}


def write_micro_config(overrides: list[str], root: Path) -> Path:
    """The micro run with ``overrides`` written to ``<root>/run/config.yaml`` (once, before any
    rank starts: the ranks share the run directory, rank 0 trains its tokenizer)."""
    from nemo_neko.config import save_run_config
    from nemo_neko.testing.runs import compose_run

    cfg = compose_run(root / "run", ["train.max_steps=100", *overrides], data_root=root / "data")
    save_run_config(cfg, root / "run" / "config.yaml")
    return root / "run" / "config.yaml"


def build_micro_trainer(config: Path):
    """The ``Trainer`` of a saved micro run (full recomputation without a method: Megatron's
    uniform method, one layer per checkpoint)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import Trainer

    run = load_run_config(config)
    if str(run.model.recompute_granularity) == "full" and run.model.recompute_method is None:
        run.model.recompute_method, run.model.recompute_num_layers = "uniform", 1
    return Trainer(run, config.parent)


def measure_rank(rank: int, world_size: int, config: str, steps: int) -> None:
    """One rank of the micro run saved as ``config``: a step, then the measured and estimated
    figures of :data:`FIGURES` written next to it as ``rank<rank>.json`` (a
    :func:`~nemo_neko.testing.distributed.run_distributed` worker)."""
    trainer = build_micro_trainer(Path(config))
    trainer.train_step()  # the optimizer's state exists after the first step
    measured = measured_state(trainer)
    measured["activations"] = peak_saved_bytes(trainer, steps)
    figures = {"rank": rank, "pp_rank": trainer.parallel.pp_rank, "measured": measured}
    figures["estimate"] = estimated_state(trainer)
    (Path(config).parent / f"rank{rank}.json").write_text(json.dumps(figures))


def measure(overrides: list[str], world_size: int = 1, steps: int = 1) -> list[dict]:
    """Measured and estimated figures of every rank of a micro run with ``overrides``, on
    ``world_size`` fresh gloo processes (parallel state and CPU shims never leak into the
    caller)."""
    import tempfile

    from nemo_neko.testing.distributed import run_distributed

    with tempfile.TemporaryDirectory() as tmp:
        config = write_micro_config(overrides, Path(tmp))
        run_distributed(measure_rank, world_size, str(config), steps)  # fresh processes
        return [
            json.loads((config.parent / f"rank{r}.json").read_text()) for r in range(world_size)
        ]
