"""Training logs: a progress line on the terminal, TensorBoard, ``metrics.jsonl`` (W&B optional).

Only the logging rank writes (the last pipeline stage of the first data-parallel replica, which
holds the losses); every record is also appended to ``<run_dir>/metrics.jsonl`` so that runs can
be compared exactly (the resume test compares per-step losses from it).
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
        self._writer = None
        self._wandb = None
        self._start = time.perf_counter()
        self._start_step: int | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    "train.wandb_project is set but wandb is not installed: pip install wandb"
                ) from err
            self._wandb = wandb.init(project=wandb_project, name=run_name, dir=str(self.run_dir))

    def start(self, step: int) -> None:
        """The loop starts (or resumes) at ``step``: the ETA counts from here."""
        self._start_step = step
        self._start = time.perf_counter()

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
        self._metrics.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()
