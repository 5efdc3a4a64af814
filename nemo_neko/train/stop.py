"""Graceful stop: SIGTERM, SIGINT and SIGUSR1 end a run after the current step, with a checkpoint.

The handlers (:class:`StopSignals`) only note the signal. After every step each rank offers the
signal it got (0 for none) to an all-reduce (MAX) over the world, so a signal that reached only
some ranks, or reached them at different moments, stops every rank after the same step; then
the run saves its checkpoint (the normal ``Trainer.save()``), rank 0 writes the stop record
``<run_dir>/train.stopped`` and :class:`TrainingStopped` ends the loop. A signal during set-up
takes effect once set-up is done, before the first step: nothing was trained, so nothing is
saved (the run's ``latest`` checkpoint, if any, is where it resumes).

A second SIGINT (Ctrl-C twice) aborts at once: the first one restores SIGINT's default action.

Exit status of ``python -m nemo_neko.train`` after a stop: :data:`STOPPED_STATUS` (75, sysexits'
``EX_TEMPFAIL``: try again), "stopped, resumable": rerun the same command to resume. The ranks
of a world of several (torchrun sets ``TORCHELASTIC_RUN_ID``, srun and others ``WORLD_SIZE``)
exit 0 instead: their launchers take any other status for a failure (torchrun reports it with a
traceback, ``srun --kill-on-bad-exit`` kills the ranks still exiting). The stop record tells the
launchers (``nemo_neko.launch.local``, the Slurm script) what happened; they exit 75 themselves.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from nemo_neko.utils.processes import signal_name

STOPPED_STATUS = 75
"""Exit status of a run stopped by a signal after saving: rerun the same command to resume."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)
"""Signals that stop a run after the current step (SIGUSR1: Slurm's warning before the time
limit). Installed in this order: a process that catches SIGTERM has all three handlers (Python
catches SIGINT from the start), which is what a launcher waits for before it forwards one."""


class TrainingStopped(Exception):
    """The run stopped on a signal (after saving, when a step had run since the last checkpoint).

    Attributes:
        step: the optimizer steps done.
        signal: the signal's name (``SIGTERM``).
        checkpoint: the checkpoint that resumes the run (None: nothing trained yet).
    """

    def __init__(self, step: int, signal: str, checkpoint: str | None):
        self.step, self.signal, self.checkpoint = step, signal, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (nothing trained)"
        super().__init__(f"stopped at step {step} on {signal}: {where}")


class StopSignals:
    """Notes SIGTERM/SIGINT/SIGUSR1 (nothing else happens in the handler); one per process.

    Use :func:`stop_signals` to get it; :meth:`install` is idempotent and keeps a signal that
    already arrived.
    """

    def __init__(self) -> None:
        self.received = 0
        """The last stop signal received (0: none)."""
        self._previous: dict[int, object] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> StopSignals:
        """Handle the stop signals from now on (in the main thread; elsewhere Python cannot, and
        the signals keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the handlers back that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        if signum == signal.SIGINT:  # a second Ctrl-C aborts at once, without a checkpoint
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    def agree(self) -> int:
        """Collective over the world: the largest signal number any rank received (0: none)."""
        return world_max(self.received)


def world_max(value: int) -> int:
    """Collective over the default group: the largest ``value`` of all ranks (``value`` itself
    without a process group). One int64 all-reduce: on the GPU with NCCL, on the CPU with gloo."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = "cpu"
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


_STOP = StopSignals()


def stop_signals() -> StopSignals:
    """The process's :class:`StopSignals` (not installed until :meth:`~StopSignals.install`)."""
    return _STOP


def under_torchrun() -> bool:
    """Whether this process is a rank started by torchrun (which sets ``TORCHELASTIC_RUN_ID``)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def exit_status_after_stop() -> int:
    """:data:`STOPPED_STATUS` for a process on its own, 0 for a rank of a launched world (under
    torchrun, or ``WORLD_SIZE`` > 1; see the module docstring)."""
    if under_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 0
    return STOPPED_STATUS


def write_stop_record(path: str | os.PathLike, stopped: TrainingStopped, total_steps: int) -> None:
    """Write the stop record (JSON) atomically: temporary file, then ``os.replace``."""
    path = Path(path)
    record = {
        "step": stopped.step,
        "total_steps": total_steps,
        "signal": stopped.signal,
        "checkpoint": stopped.checkpoint,
        "pid": os.getpid(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def read_stop_record(path: str | os.PathLike) -> dict | None:
    """The stop record at ``path`` (``step``, ``total_steps``, ``signal``, ``checkpoint``), or
    None when there is none (the last training ran to its end, or failed)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def describe_stop(record: dict) -> str:
    """``stopped at step 5 of 12 on SIGTERM, checkpoint ...`` from a stop record."""
    where = record.get("checkpoint") or "no checkpoint (nothing trained)"
    return (
        f"stopped at step {record['step']} of {record['total_steps']} on {record['signal']}, "
        f"{'checkpoint ' if record.get('checkpoint') else ''}{where}"
    )


__all__ = [
    "STOPPED_STATUS",
    "STOP_SIGNALS",
    "StopSignals",
    "TrainingStopped",
    "describe_stop",
    "exit_status_after_stop",
    "read_stop_record",
    "signal_name",
    "stop_signals",
    "under_torchrun",
    "world_max",
    "write_stop_record",
]
