"""Helpers of the stop tests: real training processes started, watched and signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from nemo_neko.utils.processes import catches

ROOT = Path(__file__).resolve().parents[2]
STOP_OVERRIDES = ["train.epochs=2", "train.lr=3e-3"]
"""A micro run of 47 steps of ~0.1-0.5 s on two cores: long enough to signal half-way."""


def start(command: list[str], log: Path) -> subprocess.Popen:
    """``command`` from the checkout, its output (both streams) into ``log``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MASTER_PORT", None)  # a world of one must not inherit a port
    return subprocess.Popen(
        command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )


_HOLD = """
import sys, time
from nemo_neko.utils.lock import DirectoryLock
DirectoryLock(sys.argv[1], what="run directory").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_lock(path: Path) -> subprocess.Popen:
    """A process holding the lock on ``path`` (:mod:`nemo_neko.utils.lock`) until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def trainer(config: Path, log: Path) -> subprocess.Popen:
    """``python -m nemo_neko.train config`` (one process)."""
    return start([sys.executable, "-m", "nemo_neko.train", str(config)], log)


def wait_until(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = 300):
    """Poll ``condition()`` until it is true; fail (with the log's end) when ``proc`` ends or
    the time is up first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{tail(log)}"
        time.sleep(0.05)


def ready_for(pid: int) -> bool:
    """Whether process ``pid`` has its stop handlers installed (it catches SIGTERM, the last)."""
    return catches(pid, signal.SIGTERM)


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text()[-chars:] if log.exists() else "(no log)"


def train_records(run_dir: Path) -> list[dict]:
    """Every train record of ``metrics.jsonl``, in file order (a cut-off last line skipped)."""
    path = run_dir / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item["kind"] == "train":
            out.append(item)
    return out


def last_step(run_dir: Path) -> int:
    records = train_records(run_dir)
    return records[-1]["step"] if records else 0


def losses_once(run_dir: Path) -> dict[int, float]:
    """Per-step train losses; fails unless every step is there exactly once, in order."""
    steps = [r["step"] for r in train_records(run_dir)]
    assert steps == list(range(1, len(steps) + 1)), f"steps not each once, in order: {steps}"
    return {r["step"]: r["loss"] for r in train_records(run_dir)}


def latest(run_dir: Path) -> str | None:
    pointer = run_dir / "checkpoints" / "latest"
    return pointer.read_text().strip() if pointer.exists() else None


def stop_record(run_dir: Path) -> dict | None:
    path = run_dir / "train.stopped"
    return json.loads(path.read_text()) if path.exists() else None


class Family:
    """Every process seen below ``root`` while it runs (polled), to check none outlives it."""

    def __init__(self, root: int):
        self.root = root
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}

    def look(self) -> None:
        try:
            children = psutil.Process(self.root).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            if child.pid not in self.seen:
                try:
                    self.commands[child.pid] = " ".join(child.cmdline())
                except psutil.Error:
                    continue
                self.seen[child.pid] = child

    def alive(self) -> list[str]:
        out = []
        for pid, process in self.seen.items():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{pid} {self.commands[pid][:120]}")
            except psutil.NoSuchProcess:
                continue
        return out
