"""Training logs: a progress line on the terminal, TensorBoard, ``metrics.jsonl`` (W&B optional).

Only the logging rank writes (the last pipeline stage of the first data-parallel replica, which
holds the losses); every record is also appended to ``<run_dir>/metrics.jsonl`` so that runs can
be compared exactly (the resume tests compare per-step losses from it).

A run that resumes at step S (:meth:`TrainingLogger.start`) first drops the records of steps
after S from ``metrics.jsonl`` (:func:`drop_steps_after`: the steps it is about to redo, logged
by the interrupted run after its last checkpoint; rewritten atomically), so the file holds each
step once; TensorBoard hides the same steps of the earlier run (``purge_step``). W&B runs are
separate runs per start.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from nemo_neko.utils.progress import format_duration


class TrainingLogger:
    """Writes step records; a no-op on non-logging ranks."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        enabled: bool,
        total_steps: int,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        run_name: str = "neko",
    ):
        self.enabled = enabled
        self.total_steps = total_steps
        self.run_dir = Path(run_dir)
        self.tensorboard = tensorboard
        self._metrics = None
        self._writer = None
        self._wandb = None
        self._start = time.perf_counter()
        self._start_step: int | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    "train.wandb_project is set but wandb is not installed: pip install wandb"
                ) from err
            self._wandb = wandb.init(project=wandb_project, name=run_name, dir=str(self.run_dir))

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def start(self, step: int) -> None:
        """The loop starts (or resumes) at ``step``: records of later steps are dropped from
        ``metrics.jsonl`` (and hidden in TensorBoard), the ETA counts from here."""
        self._start_step = step
        self._start = time.perf_counter()
        if self.enabled and self._metrics is None:
            drop_steps_after(self.metrics_path, step)
            self._open(purge_step=step + 1)

    def _open(self, purge_step: int | None = None) -> None:
        if self._metrics is None:
            self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        if self.tensorboard and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)

    def eta(self, step: int) -> str:
        """Time left at the speed of the steps this process has run (``"?"`` before any)."""
        start = self._start_step if self._start_step is not None else 0
        done = step - start
        elapsed = time.perf_counter() - self._start
        if done <= 0 or elapsed <= 0:
            return "?"
        return format_duration(elapsed / done * (self.total_steps - step))

    def log(
        self, step: int, scalars: dict[str, float], *, kind: str = "train", line: str | None = None
    ) -> None:
        """Record ``scalars`` at ``step`` (TensorBoard tags ``<kind>/<name>``)."""
        if not self.enabled:
            return
        self._open()
        record = {
            "step": step,
            "kind": kind,
            **{
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in scalars.items()
            },
        }
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for name, value in scalars.items():
                if isinstance(value, (int, float)) and value is not None:
                    self._writer.add_scalar(f"{kind}/{name}", value, step)
            self._writer.flush()
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)
        if line:
            print(line, file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def drop_steps_after(path: str | os.PathLike, step: int) -> int:
    """Remove the records of steps after ``step`` from a ``metrics.jsonl`` (and a line cut off
    by a kill); rewritten atomically (temporary file, then ``os.replace``) when anything goes.

    Returns:
        the number of lines removed or mended (0 when the file is missing or already ends at
        ``step``).
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                record_step = None
            if isinstance(record_step, int) and record_step <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
                dropped += not line.endswith("\n")  # rewrite to end the line
            elif line.strip():
                dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    return dropped
