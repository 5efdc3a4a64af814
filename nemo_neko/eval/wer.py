"""Word error counting: corpus-level WER the way each leaderboard era computes it.

* :func:`jiwer_counts`: jiwer over all pairs (the 2024 leaderboard's ``evaluate`` "wer").
* :func:`kaldialign_counts`: kaldialign's ``batch_error_rate`` (the current leaderboard), where
  ``merge_compounds=True`` lets adjacent words on either side match one word on the other at zero
  cost: "air flights" vs "airflights" is no error, while jiwer counts a substitution and a
  deletion.
* :func:`word_edits`: the plain Levenshtein distance between two token lists, for oracles.

Corpus WER is total errors over total reference words, never a mean of per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCounts:
    """Word errors summed over a corpus."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors / reference words (a fraction; ``inf`` for errors against no words)."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_words

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_words + other.ref_words,
        )


def _check_lengths(references: Sequence, hypotheses: Sequence) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def jiwer_counts(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Corpus error counts from jiwer (whitespace words; an empty hypothesis is all deletions)."""
    _check_lengths(references, hypotheses)
    if not references:
        return ErrorCounts()
    import jiwer

    out = jiwer.process_words(list(references), list(hypotheses))
    ref_words = out.substitutions + out.deletions + out.hits
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, ref_words)


def kaldialign_counts(
    references: Sequence[str], hypotheses: Sequence[str], *, merge_compounds: bool = True
) -> ErrorCounts:
    """Corpus error counts from kaldialign's ``batch_error_rate`` over whitespace words."""
    _check_lengths(references, hypotheses)
    from kaldialign import batch_error_rate

    out = batch_error_rate(
        [tuple(r.split()) for r in references],
        [tuple(h.split()) for h in hypotheses],
        merge_compounds=merge_compounds,
    )
    return ErrorCounts(out["sub"], out["del"], out["ins"], out["ref_len"])


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (every edit costs 1)."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(reference, hypothesis)
