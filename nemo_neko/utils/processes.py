"""Process plumbing for launchers and trainers (Linux specifics, no-ops elsewhere).

* :func:`die_with_parent`: ``prctl(PR_SET_PDEATHSIG)``, a signal delivered to this process when
  its parent dies (also when the parent is SIGKILLed); used as a ``preexec_fn`` for children
  that must not outlive their launcher, and by ranks for the torchrun agent that started them.
* :func:`catches`: whether a process has installed a handler for a signal (``SigCgt`` in
  ``/proc/<pid>/status``), so that a launcher forwards a stop signal to a rank only once the
  rank handles it instead of being killed by it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits.

    Args:
        sig: the signal (SIGTERM lets a trainer save before it exits).
        parent: the expected parent's PID; when the parent is already gone (the process was
            re-parented before the call), ``sig`` is raised at once.

    Returns:
        whether the request was made (False off Linux or without libc's ``prctl``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def parent_death_signal(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when the process
    that starts it dies."""
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(sig, parent)

    return preexec


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (True where this cannot be
    read: off Linux); False for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (int(sig) - 1) & 1)
    except FileNotFoundError:
        return not sys.platform.startswith("linux")
    except (OSError, ValueError):
        return True
    return True


def signal_name(sig: int) -> str:
    """``SIGTERM`` for 15; the number for a signal Python does not name."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
