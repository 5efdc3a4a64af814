"""Progress of long work: done/total, rate and ETA, on a terminal or in a log.

On a terminal a tqdm bar (when tqdm is installed); elsewhere (Slurm logs, CI, a launcher's
subprocess) one plain line every ``interval`` seconds and at the end::

    correct: 320/700 records (45.7%), 8.9 records/s, ETA 0m43s

Rates and the ETA count only the work done in this process, so a resumed job (``done > 0``)
reports its own speed; the ETA is ``(total - done) / rate``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO


def format_duration(seconds: float) -> str:
    """``"1h05m"``, ``"4m07s"``: the ETA format."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def gibibytes(amount: float) -> str:
    """An amount of bytes as ``"1.25 GiB"`` (for :class:`Progress` over bytes)."""
    return f"{amount / 2**30:.2f} GiB"


class Progress:
    """A meter over ``total`` units of work.

    Args:
        total: units in the whole job (already finished ones included).
        desc: label at the start of each line.
        unit: what is counted (``records``, ``utt``, ``B``...).
        done: units finished before this process started (resumed work).
        stream: where the bar or the lines go (default: stderr); a bar only on a terminal.
        interval: seconds between plain lines when there is no terminal.
        enabled: False = silent (the counts are still kept).
        amount: formats an amount of units for the plain line (default: the integer).
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "items",
        done: int = 0,
        stream: IO[str] | None = None,
        interval: float = 30.0,
        enabled: bool = True,
        amount: Callable[[float], str] | None = None,
    ):
        self.total, self.done, self.desc, self.unit = total, done, desc, unit
        self.interval, self.enabled = interval, enabled
        self._resumed = done
        self._amount = amount or (lambda n: f"{int(n)}")
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.perf_counter()
        self._last_line = self._start
        self._postfix = ""
        self._bar = None
        if enabled and getattr(self._stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            scaled = unit == "B"
            self._bar = tqdm(
                total=total,
                initial=done,
                desc=desc,
                unit=unit,
                file=self._stream,
                unit_scale=scaled,
                unit_divisor=1024 if scaled else 1000,
            )

    # -- figures ----------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since this meter started."""
        return time.perf_counter() - self._start

    @property
    def rate(self) -> float:
        """Units per second done by this process (0 before the first update)."""
        elapsed = self.elapsed
        return (self.done - self._resumed) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before anything was done)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        """``"desc: 320/700 records (45.7%), 8.9 records/s, ETA 0m43s"`` (+ any postfix)."""
        share = f" ({self.done / self.total:.1%})" if self.total else ""
        eta = self.eta
        unit = "" if self.unit == "B" else f" {self.unit}"  # byte amounts carry their unit
        rate = self._amount(self.rate) if self.unit == "B" else f"{self.rate:.3g}{unit}"
        parts = [
            f"{self.desc}: {self._amount(self.done)}/{self._amount(self.total)}{unit}{share}",
            f"{rate}/s",
            f"ETA {format_duration(eta)}" if eta is not None and self.done < self.total else "",
            self._postfix,
        ]
        return ", ".join(p for p in parts if p)

    # -- updates ----------------------------------------------------------------------------

    def update(self, n: int = 1, *, postfix: str | None = None) -> None:
        """Count ``n`` more units; ``postfix`` replaces the extra text of the line (e.g. RTFx)."""
        self.done += n
        if postfix is not None:
            self._postfix = postfix
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if self._postfix:
                self._bar.set_postfix_str(self._postfix)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval or self.done >= self.total:
            self._last_line = now
            print(self.line(), file=self._stream, flush=True)

    def close(self) -> float:
        """Stop the meter (a last line when none was printed at the end); returns the elapsed
        seconds."""
        elapsed = self.elapsed
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.done < self.total:
            print(self.line(), file=self._stream, flush=True)
        return elapsed
