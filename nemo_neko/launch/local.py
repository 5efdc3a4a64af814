"""``cluster=local``: run the stages in place, training under torchrun with the configured ranks.

* ``prepare`` (with a ``base.source``): ``python -m nemo_neko.convert prepare --run-dir
  <run_dir>`` (fetch, import and upcycle the base model once, into the cache);
* ``train``: ``torchrun --standalone --nproc_per_node N -m nemo_neko.train <run_dir>/config.yaml``
  (resumes from the run's latest checkpoint by itself); with ``cluster.nnodes > 1`` torchrun
  meets the other nodes at ``cluster.master_addr:master_port`` as node ``cluster.node_rank``;
* ``correct``: ``python -m nemo_neko.eval correct --run-dir <run_dir>`` (predictions of the
  held-out sets; a rerun with the same checkpoint and settings skips records already corrected,
  one after more training starts a new file and moves the old one aside);
* ``report``: ``python -m nemo_neko.eval report`` on the held-out records and the predictions,
  printed and written to ``<run_dir>/report.{json,md,png}``.

Correction and report run on node 0 only.

Each stage runs in its own session and dies with the launcher (:mod:`.supervise`). SIGTERM,
SIGINT (Ctrl-C) or SIGUSR1 to the launcher stop the run: training stops on every rank after the
current step and saves a checkpoint, any other stage is stopped, no later stage starts, and the
launcher prints one line (``stopped at step N of M on SIGTERM, checkpoint ...: rerun the same
command to resume``) and exits with status 75 (:data:`~nemo_neko.train.stop.STOPPED_STATUS`).
The same when a rank is signalled directly. A second Ctrl-C aborts training without a
checkpoint. A run directory whose trainer still runs is refused before anything is written
(:func:`check`: its ``train.lock``; one line, status 2); the trainer holds that lock itself.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from nemo_neko.paths import RunPaths


class StageFailed(RuntimeError):
    """A stage's process exited with an error."""


def _run(command: list[str], stage: str, run_dir: Path) -> int | None:
    """Run one stage; None when it finished, the exit status when a signal stopped the run.

    Raises:
        StageFailed: the stage failed.
    """
    from nemo_neko.launch.supervise import supervise
    from nemo_neko.train.stop import STOPPED_STATUS, describe_stop, read_stop_record

    print(f"[{stage}] {shlex.join(command)}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    outcome = supervise(command, env, ranks=stage == "train")
    code = outcome.returncode
    record = read_stop_record(RunPaths(run_dir).stopped) if stage == "train" else None
    if record is not None and code in (0, STOPPED_STATUS):
        print(f"[{stage}] {describe_stop(record)}: rerun the same command to resume", flush=True)
        return STOPPED_STATUS
    if outcome.signals and stage != "train":  # stopped by the SIGTERM it was sent
        print(
            f"[{stage}] stopped on {outcome.signal_names} (exit code {code}): rerun the same "
            f"command to resume",
            flush=True,
        )
        return STOPPED_STATUS
    if code != 0:
        after = f" after {outcome.signal_names}" if outcome.signals else ""
        raise StageFailed(
            f"stage '{stage}' failed with exit code {code}{after}: {shlex.join(command)}"
        )
    if outcome.signals:  # training had finished when the signal came
        print(
            f"[{stage}] finished; stopped on {outcome.signal_names} before the next stage: "
            f"rerun the same command to resume",
            flush=True,
        )
        return STOPPED_STATUS
    return None


def stage_commands(run, run_dir: Path, python: str = sys.executable) -> dict[str, list[str]]:
    """The command of each stage for one process; ``train`` runs once per rank.

    Args:
        run: the run config.
        run_dir: its run directory (holding ``config.yaml``).
        python: the interpreter (the Slurm launcher passes the one of its job steps).
    """
    paths = RunPaths(run_dir)
    return {
        "prepare": [python, "-m", "nemo_neko.convert", "prepare", "--run-dir", str(run_dir)],
        "train": [python, "-m", "nemo_neko.train", str(paths.config)],
        "correct": [python, "-m", "nemo_neko.eval", "correct", "--run-dir", str(run_dir)],
        "report": [
            python,
            "-m",
            "nemo_neko.eval",
            "report",
            str(paths.corrected_records),  # written by the correct stage
            "--predictions",
            str(paths.predictions),
            "--json",
            str(paths.report("json")),
            "--markdown",
            str(paths.report("md")),
            "--png",
            str(paths.report("png")),
        ]
        + (["--routing", str(paths.routing)] if run.model.num_experts else []),
        "leaderboard": [python, "-m", "nemo_neko.eval", "leaderboard", "--run-dir", str(run_dir)],
    }


def torchrun(cluster, python: str = sys.executable) -> list[str]:
    """``python -m torch.distributed.run`` starting ``cluster.nproc_per_node`` ranks on this node."""
    command = [python, "-m", "torch.distributed.run"]
    if cluster.nnodes == 1:
        command.append("--standalone")
    else:
        command += [
            "--nnodes",
            str(cluster.nnodes),
            "--node_rank",
            str(cluster.node_rank),
            "--master_addr",
            cluster.master_addr,
            "--master_port",
            str(cluster.master_port),
        ]
    return command + ["--nproc_per_node", str(cluster.nproc_per_node)]


def correct_torchrun(nproc: int, python: str = sys.executable) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N``: the correct stage's
    ranks on one node (``generate.nproc``; its own rendezvous, whatever the training's)."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def commands(run, run_dir: Path) -> list[tuple[str, list[str]]]:
    """``(stage, command)`` in the order this node runs them."""
    per_process = stage_commands(run, run_dir)
    out = []
    for stage in run.active_stages():
        if stage == "train":
            out.append((stage, torchrun(run.cluster) + per_process["train"][1:]))
        elif stage == "correct" and run.generate.nproc > 1 and run.cluster.node_rank == 0:
            ranks = correct_torchrun(run.generate.nproc)
            out.append((stage, ranks + per_process["correct"][1:]))
        elif run.cluster.node_rank == 0:
            out.append((stage, per_process[stage]))
    return out


def plan(run, run_dir: Path) -> str:
    """The dry-run text: the commands this node would run."""
    cluster = run.cluster
    lines = [f"local: the stages on node {cluster.node_rank} of {cluster.nnodes}"]
    lines += [f"  [{stage}] {shlex.join(command)}" for stage, command in commands(run, run_dir)]
    if cluster.nnodes > 1:
        lines.append(
            f"  run the same command on each of the {cluster.nnodes} nodes with "
            f"cluster.node_rank=<0..{cluster.nnodes - 1}> cluster.master_addr=<node 0>"
        )
    return "\n".join(lines)


def check(run) -> None:
    """Before anything is written: a run that trains must not be in use by a running trainer
    (its ``train.lock``; :class:`~nemo_neko.utils.lock.LockedError` names the holder)."""
    from nemo_neko.utils.lock import DirectoryLock

    if "train" in run.active_stages():
        paths = RunPaths(run.run_dir)
        DirectoryLock(paths.train_lock, what=f"run directory {paths.root}").check()


def start(run, run_dir: Path) -> int:
    """Run every configured stage in order; raise :class:`StageFailed` on the first failure.

    Returns:
        0, or :data:`~nemo_neko.train.stop.STOPPED_STATUS` when a signal stopped the run.
    """
    for stage, command in commands(run, run_dir):
        status = _run(command, stage, run_dir)
        if status is not None:
            return status
    return 0
