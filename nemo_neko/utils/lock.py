"""One owner per directory: an exclusive ``fcntl.flock`` on a lock file, held while the owner lives.

    lock = DirectoryLock(run_dir / "train.lock", what=f"run directory {run_dir}")
    lock.acquire()          # LockedError naming the holder's PID and host when taken
    ...
    lock.release()          # or the owner exits: the kernel drops the lock with the process

The lock is the ``flock`` on the open file, not the file: a file left behind by a killed owner
(its PID and host still written in it) blocks nobody, the next owner takes the lock and writes
its own. The descriptor is not inherited by programs the owner starts (``O_CLOEXEC``).

On a file system without ``flock`` (Lustre mounted without ``-o flock``) :meth:`acquire` returns
False and nothing is guarded; on NFS the kernel emulates ``flock`` with POSIX locks, which the
server enforces across clients.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path


class LockedError(RuntimeError):
    """Another process holds the lock (the message names it and what to do)."""


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike, what: str):
        """
        Args:
            path: the lock file.
            what: what the lock guards, for the message (``"run directory runs/x"``).
        """
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock and write ``pid host time`` into the file.

        Returns:
            True when held; False when the file system has no ``flock`` (nothing guarded).

        Raises:
            LockedError: another process holds it (its PID and host in the message).
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(self._refusal()) from None
            return False  # ENOLCK, ENOSYS, EINVAL: no flock here
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.write(fd, f"pid {os.getpid()} host {socket.gethostname()} since {stamp}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (the file stays; it blocks nobody)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def holder(self) -> str | None:
        """Who holds the lock now (``"pid 12 host n1 since ..."``), or None when it is free."""
        if self._fd is not None:
            return f"pid {os.getpid()} host {socket.gethostname()} (this process)"
        try:
            self.check()
        except LockedError:
            return self._owner()
        return None

    def check(self) -> None:
        """:class:`LockedError` when another process holds the lock (probed by taking and at
        once dropping it, so a free lock stays free)."""
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(self._refusal()) from None
        finally:
            os.close(fd)  # releases the probe's lock, if it got one

    def _owner(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "a process that has not written its PID yet"

    def _refusal(self) -> str:
        owner = self._owner()
        pid = owner.split()[1] if owner.startswith("pid ") else None
        hint = f" (stop it with kill -TERM {pid} on its host)" if pid else ""
        return (
            f"{self.what} is in use by another trainer: {owner} holds {self.path}; "
            f"wait for it to finish or stop it{hint}"
        )

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
