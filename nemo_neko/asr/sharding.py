"""Batch plan and shard assignment for data-parallel N-best generation: pure functions.

The whole input manifest is planned once, identically by every shard:

1. utterances are sorted by duration, longest first (ties by cut id), and cut into batches of
   at most ``batch_size`` utterances and at most ``max_batch_seconds`` of padded audio
   (``len(batch) * longest duration``), so padding is small and memory bounded;
2. shard ``i`` of ``N`` takes the batches ``j`` with ``j % N == i`` (round-robin over the
   duration-sorted batches, so every shard gets a similar mix of long and short audio).

Because a batch is the same set of utterances whichever shard runs it, and its sampling seed is
derived from its index (:func:`batch_seed`), the union of ``N`` shards is exactly the
unsharded output, and a resumed shard recomputes exactly the batches it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Shard", "batch_seed", "fingerprint", "plan_batches"]

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < N and N >= 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"3/8"`` -> ``Shard(3, 8)``."""
        match = _SHARD_RE.match(text)
        if not match:
            raise ValueError(f"--shard takes i/N (e.g. 3/8), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def tag(self) -> str:
        """File-name tag: ``""`` for an unsharded run, else ``"shard-00003-of-00008"``."""
        return "" if self.count == 1 else f"shard-{self.index:05d}-of-{self.count:05d}"

    def owns(self, batch_index: int) -> bool:
        """Whether batch ``batch_index`` of the global plan belongs to this shard."""
        return batch_index % self.count == self.index


def plan_batches(
    items: Sequence[tuple[str, float]],
    batch_size: int,
    max_batch_seconds: float | None = None,
) -> list[list[str]]:
    """Duration-sorted batches of cut ids (see the module docstring).

    Args:
        items: ``(cut id, duration in seconds)`` of every utterance; ids unique.
        batch_size: most utterances per batch.
        max_batch_seconds: most padded seconds per batch (``len * longest``); a single longer
            utterance still forms a batch of one. None: no limit.

    Returns:
        Batches of cut ids, longest audio first.

    Raises:
        ValueError: a bad limit or a repeated cut id.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_batch_seconds is not None and max_batch_seconds <= 0:
        raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
    seen: set[str] = set()
    for cut_id, _ in items:
        if cut_id in seen:
            raise ValueError(f"cut id {cut_id!r} appears more than once")
        seen.add(cut_id)
    ordered = sorted(items, key=lambda item: (-item[1], item[0]))
    batches: list[list[str]] = []
    current: list[str] = []
    longest = 0.0
    for cut_id, duration in ordered:
        if current:
            too_many = len(current) >= batch_size
            too_long = (
                max_batch_seconds is not None
                and (len(current) + 1) * max(longest, duration) > max_batch_seconds
            )
            if too_many or too_long:
                batches.append(current)
                current, longest = [], 0.0
        current.append(cut_id)
        longest = max(longest, duration)
    if current:
        batches.append(current)
    return batches


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of one batch: a function of the run seed and the global batch index only."""
    digest = hashlib.sha256(f"{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def fingerprint(data: Any) -> str:
    """Short stable hash of a JSON-able value (the plan and options a shard was started with)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
