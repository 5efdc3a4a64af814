"""Progress in bytes: a tqdm bar when tqdm is installed, otherwise a plain line on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(nbytes)`` after each tensor; ``close()`` at the end. ``enabled=False``: silent."""

    def __init__(self, total_bytes: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total_bytes, desc, enabled
        self.done = 0
        self._bar = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total_bytes,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
        )

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(nbytes)
            return
        now = time.monotonic()
        if now - self._last >= 1.0 or self.done >= self.total:
            self._last = now
            share = self.done / self.total if self.total else 1.0
            done, total = self.done / 2**30, self.total / 2**30
            print(
                f"\r{self.desc}: {share:6.1%} ({done:.2f} of {total:.2f} GiB)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            print(file=sys.stderr)
