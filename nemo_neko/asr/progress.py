"""Throughput of long recognition runs: utterances/s and RTFx (audio seconds per wall second).

The meter itself (done/total, rate, ETA, a bar or log lines) is the shared
:class:`nemo_neko.utils.progress.Progress`; :class:`Throughput` adds the audio side, shown as the
meter's postfix (``RTFx 25.3``). Rates count only the work done in this process.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Throughput"]


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

    def postfix(self) -> str:
        """``"RTFx 25.30"``: the meter's extra text."""
        return f"RTFx {self.rtfx:.2f}"
