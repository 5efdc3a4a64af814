"""``cluster=local``: run the stages in place, training under torchrun with the configured ranks.

* ``train``: ``torchrun --standalone --nproc_per_node N -m nemo_neko.train <run_dir>/config.yaml``
  (resumes from the run's latest checkpoint by itself);
* ``correct``: ``python -m nemo_neko.eval correct --run-dir <run_dir>`` (predictions of the
  held-out sets; a rerun skips records already corrected);
* ``report``: ``python -m nemo_neko.eval report`` on the held-out records and the predictions,
  printed and written to ``<run_dir>/report.{json,md,png}``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class StageFailed(RuntimeError):
    """A stage's process exited with an error."""


def _run(command: list[str], stage: str) -> None:
    print(f"[{stage}] {' '.join(command)}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    completed = subprocess.run(command, env=env)
    if completed.returncode != 0:
        raise StageFailed(
            f"stage {stage!r} failed with exit code {completed.returncode}: {' '.join(command)}"
        )


def stage_commands(run, run_dir: Path) -> dict[str, list[str]]:
    """The command of each stage (also used by the Slurm launcher)."""
    config = str(run_dir / "config.yaml")
    predictions = str(run_dir / "predictions.jsonl")
    corrected = str(run_dir / "predictions.records.jsonl.gz")  # written by the correct stage
    return {
        "train": [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(run.cluster.nproc_per_node),
            "-m", "nemo_neko.train", config,
        ],
        "correct": [sys.executable, "-m", "nemo_neko.eval", "correct", "--run-dir", str(run_dir)],
        "report": [
            sys.executable, "-m", "nemo_neko.eval", "report", corrected,
            "--predictions", predictions, "--json", str(run_dir / "report.json"), "--markdown", str(run_dir / "report.md"),
            "--png", str(run_dir / "report.png"),
        ],
    }  # fmt: skip


def run_local(run, run_dir: Path) -> int:
    """Run every configured stage in order; raise :class:`StageFailed` on the first failure."""
    commands = stage_commands(run, run_dir)
    for stage in run.stages:
        _run(commands[stage], stage)
    return 0
