"""Scoring protocols of the Open ASR Leaderboard, by name (``--protocol``).

===========  ================================================================================
protocol     what it does
===========  ================================================================================
``esb2024``  the leaderboard of the NeKo paper's era (2023 to mid 2025): the ``esb2024``
             normaliser (Whisper's) on both sides, corpus WER from jiwer; chunk rows are scored
             as they are (that leaderboard had no chunked sets)
``oal2026``  the current leaderboard: the ``oal2026`` normaliser, chunks concatenated per
             ``parent_id`` first, corpus WER from kaldialign ``batch_error_rate`` with
             ``merge_compounds=True``
===========  ================================================================================

Both drop utterances whose normalised reference is empty or "ignore time segment in scoring"
(and report how many), round each dataset's WER to 2 decimals in percent, and average the
rounded WERs without weights for the composite. Adding a protocol is one more entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nemo_neko.eval.wer import ErrorCounts, jiwer_counts, kaldialign_counts

IGNORED_REFERENCE = "ignore time segment in scoring"
"""References the leaderboard never scores (TED-LIUM's marker), compared after normalising."""


ESB_SETS = ("ami_test", "earnings22_test", "gigaspeech_test", "librispeech_test.clean",
            "librispeech_test.other", "spgispeech_test", "tedlium_test", "voxpopuli_test")  # fmt: skip
"""The eight sets of the paper-era average (ESB test sets, ``hf-audio/esb-datasets-test-only``)."""

OAL2026_SETS = ("ami_cleaned_test", "earnings22_cleaned_aa_chunked_test", "gigaspeech_cleaned_test",
                "librispeech_test.clean", "librispeech_test.other", "spgispeech_test",
                "voxpopuli_cleaned_aa_test")  # fmt: skip
"""The seven sets of the current English short-form average (huggingface/open_asr_leaderboard
``normalizer/eval_utils.py`` at d1e99b2, 2026-08-21): AMI-Cleaned, Earnings22-Cleaned-AA-chunked,
Gigaspeech-Cleaned, LS Clean, LS Other, SPGISpeech, Voxpopuli-Cleaned-AA (TED-LIUM dropped)."""


def covered_sets(protocol: Protocol, datasets: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(public sets among datasets, public sets missing)``; a dataset key matches a set when
    it is the set's key or ends with ``_<key>`` (the leaderboard's own file names put the
    dataset path first: ``hf-audio-open-asr-leaderboard_ami_cleaned_test``)."""
    present = [
        key
        for key in protocol.public_sets
        if any(d == key or d.endswith("_" + key) for d in datasets)
    ]
    return present, [key for key in protocol.public_sets if key not in present]


@dataclass(frozen=True)
class Protocol:
    """How one leaderboard era turns a manifest into a WER."""

    name: str
    description: str
    normalizer: str
    """Name for :func:`nemo_neko.eval.normalizer.get_normalizer`, applied to both sides."""
    merges_chunks: bool
    """Concatenate chunk predictions per ``parent_id`` before scoring."""
    count_errors: Callable[[Sequence[str], Sequence[str]], ErrorCounts]
    """Corpus error counts of (normalised references, normalised predictions)."""
    counter: str
    """What :attr:`count_errors` uses, for the output."""
    public_sets: tuple[str, ...] = ()
    """The dataset keys (``<dataset>_<split>``) the leaderboard's public average is taken over."""


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="esb2024",
            description="Open ASR Leaderboard 2023-2025, ESB era, the NeKo paper's",
            normalizer="esb2024",
            merges_chunks=False,
            count_errors=jiwer_counts,
            counter="jiwer",
            public_sets=ESB_SETS,
        ),
        Protocol(
            name="oal2026",
            description="Open ASR Leaderboard, current",
            normalizer="oal2026",
            merges_chunks=True,
            count_errors=kaldialign_counts,
            counter="kaldialign batch_error_rate(merge_compounds=True)",
            public_sets=OAL2026_SETS,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ``KeyError`` listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})") from None
