"""N-best lists and the duplicate policy: pure functions, no recogniser needed.

A backend returns, per utterance, candidate hypotheses best first (beam search: by score;
sampling: in draw order; pocketsphinx: its lattice A* order) and, where the method has them,
one score per hypothesis (higher is better). :func:`finalize_nbest` turns that into the list
stored on the cut, ``n`` long, with a registered duplicate policy:

================  =================================================================================
policy            result
================  =================================================================================
``keep``          the first ``n`` candidates as produced, duplicates included (fewer when the
                  backend produced fewer)
``unique_pad``    first occurrences only, in order; when fewer than ``n`` remain, the unique list is
                  repeated from the top until there are ``n`` (``[a, b]`` -> ``[a, b, a, b, a]``),
                  the fixed-size, padded-by-repetition lists HyPoradise publishes
================  =================================================================================

Text is whitespace-normalised (``" a  b "`` -> ``"a b"``) before comparing and storing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["DUPLICATE_POLICIES", "NBest", "finalize_nbest", "known_policies"]


@dataclass(frozen=True)
class NBest:
    """Candidate hypotheses of one utterance, best first.

    Attributes:
        texts: hypotheses (at least one; an empty string is a valid, empty hypothesis).
        scores: one number per hypothesis (higher is better), or None when the method gives none.
    """

    texts: tuple[str, ...]
    scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError("an N-best list needs at least one hypothesis")
        if self.scores is not None and len(self.scores) != len(self.texts):
            raise ValueError(
                f"{len(self.scores)} scores for {len(self.texts)} hypotheses (need one each)"
            )

    @classmethod
    def of(cls, texts: Sequence[str], scores: Sequence[float] | None = None) -> NBest:
        """Build from lists (texts whitespace-normalised, scores as floats)."""
        return cls(
            tuple(" ".join(t.split()) for t in texts),
            None if scores is None else tuple(float(s) for s in scores),
        )


def _keep(nbest: NBest, n: int) -> NBest:
    scores = None if nbest.scores is None else nbest.scores[:n]
    return NBest(nbest.texts[:n], scores)


def _unique_pad(nbest: NBest, n: int) -> NBest:
    seen: set[str] = set()
    keep: list[int] = []
    for i, text in enumerate(nbest.texts):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    keep = keep[:n]
    order = [keep[k % len(keep)] for k in range(n)]
    scores = None if nbest.scores is None else tuple(nbest.scores[i] for i in order)
    return NBest(tuple(nbest.texts[i] for i in order), scores)


DUPLICATE_POLICIES: dict[str, Callable[[NBest, int], NBest]] = {
    "keep": _keep,
    "unique_pad": _unique_pad,
}
"""Policy name -> ``fn(nbest, n) -> NBest`` (see the module docstring)."""


def known_policies() -> list[str]:
    """Registered duplicate policies."""
    return sorted(DUPLICATE_POLICIES)


def finalize_nbest(nbest: NBest, n: int, policy: str = "keep") -> NBest:
    """The stored N-best list: ``n`` hypotheses under ``policy`` (see the module docstring).

    Args:
        nbest: the backend's candidates, best first.
        n: hypotheses wanted (>= 1).
        policy: a name from :data:`DUPLICATE_POLICIES`.

    Raises:
        ValueError: ``n < 1`` or an unknown policy.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(
            f"unknown duplicate policy {policy!r} (known: {', '.join(known_policies())})"
        )
    return DUPLICATE_POLICIES[policy](NBest.of(nbest.texts, nbest.scores), n)
