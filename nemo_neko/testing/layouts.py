"""Train a micro run under a parallel layout and record what each step did, to compare layouts.

Every layout of the same run config, started from the same initial checkpoint and fed the same
global batches, must train identically up to float rounding: the same loss, per-task losses,
gradient norm and routing counts per step as one process. :func:`record_layout` trains a few
steps under a layout (in ``run_distributed`` workers: a real gloo world) and writes, from the
logging rank, one JSON record per step::

    {"step": 1, "loss": 6.61, "task_losses": [..], "grad_norm": 3.2,
     "routing": [[E x (T + 1) x 2 token counts]], "replayed": 0}

``routing`` is :meth:`~nemo_neko.train.loop.Trainer.routing_table` (tokens per expert, task
slot, gate/forced; summed over layers, expert, data and pipeline ranks); ``replayed`` counts
the MoE forwards re-run by activation recomputation (summed over this rank's layers). A
one-process run also saves its first step's gradients (``main_grad`` of every trainable
parameter) to ``<records>.grads.pt``.

:func:`write_layout_runs` prepares the shared pieces: a tokenizer and an initial checkpoint,
written once by a single process, that every layout's run then starts from
(``train.init_from``).
"""

from __future__ import annotations

import json
from pathlib import Path

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import write_micro_run

COMPARISON_OVERRIDES = [
    "model.num_layers=4",
    "train.micro_batch_size=1",
    "train.max_steps=4",
    "train.lr=3e-3",
    "train.warmup_fraction=0.25",
    "model.moe_aux_loss_coeff=0.01",
]
"""Four layers (PP2 x VPP2 has one layer per chunk), four micro-batches of one sequence per step
(1F1B keeps several in flight), four steps with a learning rate that moves the weights."""

ONE_PROCESS = [
    "model.parallel.tensor=1",
    "model.parallel.pipeline=1",
    "model.parallel.virtual_pipeline=null",
    "model.parallel.context=1",
    "model.parallel.expert=1",
    "model.parallel.expert_tensor=null",
    "model.parallel.sequence_parallel=false",
    "cluster.nnodes=1",
]
"""The layout every compared run starts from (a model file's own layout is replaced): the
layout under test is given in full by its overrides."""


def _records(trainer, steps: int, grads_path: str | None = None) -> list[dict]:
    import torch

    from nemo_neko.model.checkpoint import unwrap
    from nemo_neko.moe.layer import moe_layers

    layers = moe_layers(trainer.chunks)
    out = []
    while trainer.step < steps:
        result = trainer.train_step()
        if grads_path and not out:  # the first step's gradients (one process: all of them)
            grads = {
                name: param.main_grad.detach().clone()
                for chunk in trainer.chunks
                for name, param in unwrap(chunk).named_parameters()
                if param.requires_grad
            }
            torch.save(grads, grads_path)
        table = trainer.routing_table()
        out.append(
            {
                "step": trainer.step,
                "loss": result["loss"],
                "task_losses": result["task_losses"],
                "grad_norm": result["grad_norm"],
                "routing": table.tolist(),
                "replayed": sum(layer.replayed_forwards for layer in layers),
            }
        )
    return out


def record_layout(rank, world_size, config_path: str, out_path: str, steps: int, save: bool):
    """``run_distributed`` worker: train ``config_path``'s run (resuming from its latest
    checkpoint, else its ``train.init_from``) to ``steps``, save when asked, write the records."""
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import Trainer

    trainer = Trainer(load_run_config(config_path), Path(config_path).parent)
    trainer.maybe_resume()
    grads = f"{out_path}.grads.pt" if world_size == 1 else None
    records = _records(trainer, steps, grads)
    if save:
        trainer.save()
    if trainer.parallel.is_logging_rank:
        Path(out_path).write_text(json.dumps(records))


def _save_initial(rank, world_size, config_path: str) -> None:
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import Trainer

    trainer = Trainer(load_run_config(config_path), Path(config_path).parent)
    trainer.save()  # step 0: the seeded initial weights


def write_layout_runs(root: Path, model: str = "tiny", overrides: list[str] = ()) -> list[str]:
    """Write the shared initial checkpoint and tokenizer under ``root / "init"``; returns the
    overrides every compared run adds (``init_from``, the tokenizer, the comparison settings)."""
    root = Path(root)
    common = [*COMPARISON_OVERRIDES, *overrides]
    init = root / "init"
    if not (init / "checkpoints" / "latest").exists():
        config = write_micro_run(
            init,
            # weights only are read from it; Megatron's distributed optimizer has no state to
            # save before its first step
            [
                *common,
                *ONE_PROCESS,
                "cluster.nproc_per_node=1",
                "train.use_distributed_optimizer=false",
            ],
            data_root=root / "data",
            model=model,
        )
        run_distributed(_save_initial, 1, str(config))
    return [
        *common,
        f"train.init_from={init / 'checkpoints'}",
        f"data.tokenizer.path={init / 'tokenizer'}",
    ]


def train_layout(
    root: Path,
    name: str,
    world_size: int,
    layout: list[str],
    *,
    model: str = "tiny",
    shared: list[str],
    steps: int = 4,
    save: bool = False,
) -> list[dict]:
    """Train run ``root / name`` under ``layout`` (overrides) on ``world_size`` ranks; its records."""
    run_dir = Path(root) / name
    config = write_micro_run(
        run_dir,
        [*shared, *ONE_PROCESS, f"cluster.nproc_per_node={world_size}", *layout],
        data_root=Path(root) / "data",
        model=model,
    )
    out = run_dir / f"records_{steps}.json"
    run_distributed(record_layout, world_size, str(config), str(out), steps, save)
    return json.loads(out.read_text())


def max_differences(records: list[dict], reference: list[dict]) -> dict[str, float]:
    """Largest absolute differences of the losses, per-task losses, grad norms and routing
    counts between two record lists of the same steps."""
    import math

    assert [r["step"] for r in records] == [r["step"] for r in reference], (records, reference)
    diff = {"loss": 0.0, "task_losses": 0.0, "grad_norm": 0.0, "routing": 0.0}
    for mine, want in zip(records, reference):
        diff["loss"] = max(diff["loss"], abs(mine["loss"] - want["loss"]))
        for a, b in zip(mine["task_losses"], want["task_losses"]):
            if not (math.isnan(a) and math.isnan(b)):
                diff["task_losses"] = max(diff["task_losses"], abs(a - b))
        diff["grad_norm"] = max(diff["grad_norm"], abs(mine["grad_norm"] - want["grad_norm"]))
        flat_a, flat_b = _flatten(mine["routing"]), _flatten(want["routing"])
        diff["routing"] = max(diff["routing"], max(abs(a - b) for a, b in zip(flat_a, flat_b)))
    return diff


def _flatten(nested) -> list[float]:
    if isinstance(nested, list):
        return [x for item in nested for x in _flatten(item)]
    return [nested]
