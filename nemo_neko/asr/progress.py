"""Progress of long recognition runs: utterances/s and RTFx (audio seconds per wall second).

On a terminal a tqdm bar shows both rates; elsewhere (Slurm logs, CI) a plain line is logged
every ``interval`` seconds and at the end. Rates count only the work done in this process, so a
resumed run reports its own speed; the bar starts at the already-finished count.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import IO

log = logging.getLogger(__name__)

__all__ = ["Progress", "Throughput"]


@dataclass
class Throughput:
    """Work done and its rates.

    Attributes:
        utterances: utterances recognised in this run.
        audio_seconds: their total duration.
        wall_seconds: elapsed time.
    """

    utterances: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def utterances_per_second(self) -> float:
        return self.utterances / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def rtfx(self) -> float:
        """Inverse real-time factor: seconds of audio recognised per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "utterances": self.utterances,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "utterances_per_second": round(self.utterances_per_second, 3),
            "rtfx": round(self.rtfx, 3),
        }


class Progress:
    """A progress meter over utterances.

    Args:
        total: utterances in the whole job (finished ones included).
        done: utterances already finished before this run (resumed work).
        desc: label.
        stream: where the bar goes (default stderr); a bar only when it is a terminal.
        interval: seconds between plain log lines when there is no terminal.
    """

    def __init__(
        self,
        total: int,
        *,
        done: int = 0,
        desc: str = "n-best",
        stream: IO[str] | None = None,
        interval: float = 30.0,
    ):
        self.total, self.done, self.desc, self.interval = total, done, desc, interval
        self.stats = Throughput()
        self._start = time.perf_counter()
        self._last_line = self._start
        stream = stream if stream is not None else sys.stderr
        self._bar = None
        if getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=desc, unit="utt", file=stream)

    def update(self, utterances: int, audio_seconds: float) -> None:
        """Count one finished batch."""
        self.done += utterances
        self.stats.utterances += utterances
        self.stats.audio_seconds += audio_seconds
        now = time.perf_counter()
        self.stats.wall_seconds = now - self._start
        if self._bar is not None:
            self._bar.update(utterances)
            self._bar.set_postfix_str(self._rates())
        elif now - self._last_line >= self.interval:
            self._last_line = now
            log.info("%s: %s", self.desc, self.line())

    def _rates(self) -> str:
        return f"{self.stats.utterances_per_second:.2f} utt/s, RTFx {self.stats.rtfx:.2f}"

    def line(self) -> str:
        """``"120/400 utterances, 3.10 utt/s, RTFx 25.3"``."""
        return f"{self.done}/{self.total} utterances, {self._rates()}"

    def close(self) -> Throughput:
        """Stop the meter; returns this run's throughput."""
        self.stats.wall_seconds = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.set_postfix_str(self._rates())
            self._bar.close()
        log.info("%s done: %s", self.desc, self.line())
        return self.stats
