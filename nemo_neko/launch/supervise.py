"""A stage's process under the local launcher: signals forwarded, nothing left behind.

:func:`supervise` starts a stage's command in its own session (so a terminal's Ctrl-C reaches
only the launcher, which decides what the stage gets) with ``prctl(PR_SET_PDEATHSIG, SIGTERM)``
(so it is stopped even when the launcher is SIGKILLed), and while it runs:

* SIGTERM, SIGINT and SIGUSR1 sent to the launcher are noted by its handler and forwarded from
  the waiting loop. To training (``torchrun``) they go to the ranks themselves, torchrun's
  children, each once it has installed its stop handlers (it catches SIGTERM: ``SigCgt`` in
  ``/proc``; a rank still importing would otherwise be killed): the ranks stop after the same step, save and exit 0,
  and torchrun ends quietly. They do not go to torchrun, which would answer with a traceback and
  SIGKILL the ranks after 30 s (its shutdown timeout), whatever their save still needs. A
  second SIGINT is forwarded once a rank has taken the first (its SIGINT handler is gone; two
  signals pending at once would count as one): it aborts the rank at once. Other stages get
  SIGTERM on their process group.
* every process of the stage seen while it runs is remembered; when the stage's command has
  exited, any of them still running (a rank orphaned by a crashed torchrun) gets SIGTERM, then
  SIGKILL after :data:`LEFTOVER_GRACE_S`.

torchrun itself forwards SIGTERM/SIGINT (when it gets them: the launcher died) to the ranks, and
each rank asks for SIGTERM when torchrun dies (:mod:`nemo_neko.train.__main__`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import psutil

from nemo_neko.utils.processes import catches, parent_death_signal, signal_name

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
"""Signals the launcher forwards to the running stage."""
POLL_S = 0.2
"""How often the launcher looks at the stage's processes and forwards pending signals."""
LEFTOVER_GRACE_S = 15.0
"""Seconds a process left behind by a stage has between SIGTERM and SIGKILL."""


@dataclass
class Outcome:
    """How a stage's process ended."""

    returncode: int
    """Its exit status (negative: killed by that signal)."""
    signals: list[int] = field(default_factory=list)
    """The signals the launcher received while it ran (forwarded to it)."""
    leftovers: list[int] = field(default_factory=list)
    """PIDs of its processes still running after it exited, stopped by the launcher."""

    @property
    def signal_names(self) -> str:
        return ", ".join(signal_name(s) for s in self.signals)


class _Forwarder:
    """Pending signals and, per process, how many of them it has been sent."""

    def __init__(self, ranks: bool):
        self.ranks = ranks
        self.received: list[int] = []
        self.sent: dict[int, int] = {}
        self.seen: dict[int, psutil.Process] = {}

    def handle(self, signum: int, frame) -> None:  # the handler: note it, nothing else
        self.received.append(signum)

    def track(self, root: int) -> None:
        try:
            children = psutil.Process(root).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            self.seen.setdefault(child.pid, child)

    def forward(self, proc: subprocess.Popen) -> None:
        if not self.received:
            return
        if not self.ranks:  # a plain stage: SIGTERM to its process group, once per signal
            if self.sent.get(proc.pid, 0) < len(self.received):
                _signal_group(proc.pid, signal.SIGTERM)
                self.sent[proc.pid] = len(self.received)
            return
        try:
            ranks = psutil.Process(proc.pid).children()
        except psutil.Error:
            return
        for rank in ranks:
            done = self.sent.get(rank.pid, 0)
            for sig in self.received[done:]:
                if done == 0 and not catches(rank.pid, signal.SIGTERM):
                    break  # no stop handlers yet (still starting): next time round
                if (
                    sig == signal.SIGINT
                    and signal.SIGINT in self.received[:done]
                    and catches(rank.pid, signal.SIGINT)
                ):
                    break  # a second Ctrl-C once the rank has taken the first: an abort
                try:
                    os.kill(rank.pid, sig)
                except ProcessLookupError:
                    break
                done += 1
            self.sent[rank.pid] = done


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(command: list[str], env: dict[str, str], *, ranks: bool = False) -> Outcome:
    """Run ``command`` to its end, forwarding the launcher's stop signals (module docstring).

    Args:
        command: the stage's command.
        env: its environment.
        ranks: ``command`` is torchrun: signals go to its children (the ranks), not to it.

    Returns:
        the exit status, the signals received and the processes left behind.
    """
    forwarder = _Forwarder(ranks)
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forwarder.handle) for sig in FORWARDED} if main else {}
    try:
        proc = subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )
        while True:
            try:
                code = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            forwarder.track(proc.pid)
            forwarder.forward(proc)
        leftovers = _stop_leftovers(forwarder.seen.values())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return Outcome(code, list(forwarder.received), leftovers)


def _stop_leftovers(processes) -> list[int]:
    """SIGTERM, then SIGKILL after :data:`LEFTOVER_GRACE_S`, to those still running."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    if not alive:
        return []
    print(
        f"[launch] stopping {len(alive)} process(es) the stage left behind: "
        f"{', '.join(str(p.pid) for p in alive)}",
        file=sys.stderr,
        flush=True,
    )
    for process in alive:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=LEFTOVER_GRACE_S)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=5)
    return [p.pid for p in alive]
