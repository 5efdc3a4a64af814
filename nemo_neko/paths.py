"""Where a run keeps its files: one :class:`RunPaths`, one checkpoint naming rule.

::

    <run_dir>/
        config.yaml                      the resolved run config (every process reads it)
        base.json                        the converted base model the run starts from (prepare)
        tokenizer/                       the run's tokenizer (Hugging Face layout)
        cache/                           tokenised and packed datasets
        checkpoints/                     step_00000120/, latest (see nemo_neko.model.checkpoint)
        metrics.jsonl  tensorboard/      training logs (each step once, also after a resume)
        train.lock                       held (flock) by the trainer while it runs: one per run
        train.stopped                    the last training stopped on a signal (step, checkpoint)
        predictions.jsonl                corrections of the held-out records
        predictions.records.jsonl.gz     exactly the records that were corrected
        predictions.routing.json         which experts the held-out sets' prompts chose
        report.json  report.md  report.png
        slurm/                           job script and logs (cluster=slurm)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint written after ``step`` optimizer steps."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def records_beside(predictions: str | os.PathLike) -> Path:
    """The records file written next to a predictions file (``X.jsonl`` -> ``X.records.jsonl.gz``):
    exactly the records that were corrected, so a report scores those."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".records.jsonl.gz")


def routing_beside(predictions: str | os.PathLike) -> Path:
    """The routing summary next to a predictions file (``X.jsonl`` -> ``X.routing.json``): the
    experts the corrected records' prompts chose (:mod:`nemo_neko.inference.routing`)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".routing.json")


@dataclass(frozen=True)
class RunPaths:
    """The files of the run in ``root``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def base(self) -> Path:
        return self.root / "base.json"

    def prepared_base(self) -> dict | None:
        """What the ``prepare`` stage wrote (``checkpoint``, ``tokenizer``, ``source``), or None."""
        import json

        return json.loads(self.base.read_text()) if self.base.exists() else None

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def train_lock(self) -> Path:
        """Locked (``fcntl.flock``) by rank 0 of the trainer while it runs; a second trainer on
        the run is refused (:mod:`nemo_neko.utils.lock`)."""
        return self.root / "train.lock"

    @property
    def stopped(self) -> Path:
        """The stop record of a training stopped by a signal (:mod:`nemo_neko.train.stop`);
        removed when the next training starts."""
        return self.root / "train.stopped"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def corrected_records(self) -> Path:
        return records_beside(self.predictions)

    @property
    def routing(self) -> Path:
        """Inference routing of the held-out sets (written by the correct stage)."""
        return routing_beside(self.predictions)

    def report(self, suffix: str) -> Path:
        """``report.json``, ``report.md`` or ``report.png``."""
        return self.root / f"report.{suffix}"

    @property
    def slurm(self) -> Path:
        return self.root.resolve() / "slurm"
