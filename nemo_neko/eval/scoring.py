"""Leaderboard-compatible scoring of result manifests (``python -m nemo_neko.eval score``).

Per dataset: normalise reference and prediction with the protocol's normaliser, drop utterances
whose normalised reference is empty or "ignore time segment in scoring" (counted, never silent),
count word errors over the whole set and report ``round(100 * errors / reference words, 2)``.
RTFx is ``sum(duration) / sum(time)`` over the file's rows when every row has both (non-zero, as
the leaderboard requires). Per model, the composite WER is the unweighted mean of the rounded
per-dataset WERs and the composite RTFx is total audio over total time.

Usage::

    from nemo_neko.eval.manifests import expand_inputs
    from nemo_neko.eval.scoring import score_sources

    result = score_sources(expand_inputs(["results/"]), "esb2024")
    print(result.composites[0].wer)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nemo_neko.eval.manifests import (
    ManifestRow,
    ManifestSource,
    is_chunked,
    merge_chunks,
    read_manifest,
)
from nemo_neko.eval.normalizer import get_normalizer
from nemo_neko.eval.protocols import IGNORED_REFERENCE, Protocol, get_protocol
from nemo_neko.eval.wer import ErrorCounts


@dataclass
class DatasetScore:
    """One dataset (file) under one protocol."""

    model: str
    dataset: str
    path: str
    rows: int
    """Rows in the file (chunks before merging)."""
    utterances: int
    """Utterances scored (sessions, for merged chunks)."""
    dropped_empty: int
    """Utterances dropped: normalised reference empty."""
    dropped_ignored: int
    """Utterances dropped: reference "ignore time segment in scoring"."""
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    wer: float
    """Percent, rounded to 2 decimals."""
    rtfx: float | None
    """``sum(duration) / sum(time)`` rounded to 4 decimals (as the leaderboard stores it)."""
    audio_seconds: float | None
    inference_seconds: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class CompositeScore:
    """Per model: unweighted mean of the datasets' rounded WERs, and overall RTFx."""

    model: str
    datasets: int
    wer: float
    rtfx: float | None


@dataclass
class ScoreResult:
    """Everything ``score`` prints and writes."""

    protocol: str
    description: str
    normalizer: str
    counter: str
    datasets: list[DatasetScore]
    composites: list[CompositeScore]

    def to_dict(self) -> dict:
        return asdict(self)


def _rtfx(rows: list[ManifestRow]) -> tuple[float | None, float | None, float | None, list[str]]:
    durations = [r.duration for r in rows]
    times = [r.time for r in rows]
    if all(durations) and all(times):  # None or 0 anywhere: no RTFx, as on the leaderboard
        audio, spent = sum(durations), sum(times)
        return round(audio / spent, 4), audio, spent, []
    lacking = sum(1 for d, t in zip(durations, times) if not d or not t)
    if lacking == len(rows):
        return None, None, None, []
    return (
        None,
        None,
        None,
        [f"RTFx not computed: {lacking} of {len(rows)} rows lack a non-zero duration and time"],
    )


def score_rows(
    rows: list[ManifestRow], protocol: Protocol | str, source: ManifestSource
) -> DatasetScore:
    """Score one dataset's rows (see the module docstring).

    Raises:
        ValueError: every reference was dropped, so there is nothing to score.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    notes: list[str] = []
    if protocol.merges_chunks:
        scored_rows, merge_notes = merge_chunks(rows, source.path)
        notes += merge_notes
        if len(scored_rows) != len(rows):
            notes.append(f"{len(rows)} chunks merged into {len(scored_rows)} sessions")
    else:
        scored_rows = rows
        if is_chunked(rows):
            notes.append(
                f"{len(rows)} rows carry parent_id/chunk_index; {protocol.name} scores them one "
                "by one (use --protocol oal2026 to concatenate chunks per session)"
            )
    normalize = get_normalizer(protocol.normalizer)
    references, predictions = [], []
    dropped_empty = dropped_ignored = 0
    for row in scored_rows:
        reference = normalize(row.text)
        stripped = reference.strip()
        if not stripped:
            dropped_empty += 1
        elif stripped == IGNORED_REFERENCE:
            dropped_ignored += 1
        else:
            references.append(reference)
            predictions.append(normalize(row.pred_text))
    if not references:
        raise ValueError(
            f"{source.path}: nothing to score: all {len(scored_rows)} references are empty or "
            f"'{IGNORED_REFERENCE}' after normalisation"
        )
    counts: ErrorCounts = protocol.count_errors(references, predictions)
    rtfx, audio, spent, rtfx_notes = _rtfx(scored_rows)
    return DatasetScore(
        model=source.model,
        dataset=source.dataset,
        path=source.path,
        rows=len(rows),
        utterances=len(references),
        dropped_empty=dropped_empty,
        dropped_ignored=dropped_ignored,
        substitutions=counts.substitutions,
        deletions=counts.deletions,
        insertions=counts.insertions,
        ref_words=counts.ref_words,
        wer=round(100 * counts.wer, 2),
        rtfx=rtfx,
        audio_seconds=audio,
        inference_seconds=spent,
        notes=notes + rtfx_notes,
    )


def composite_scores(scores: list[DatasetScore]) -> list[CompositeScore]:
    """Per model, in order of first appearance: mean of rounded WERs, and total-audio RTFx."""
    by_model: dict[str, list[DatasetScore]] = {}
    for score in scores:
        by_model.setdefault(score.model, []).append(score)
    out = []
    for model, group in by_model.items():
        wer = round(sum(s.wer for s in group) / len(group), 2)
        rtfx = None
        if all(s.rtfx is not None for s in group):
            rtfx = sum(s.audio_seconds for s in group) / sum(s.inference_seconds for s in group)
        out.append(CompositeScore(model=model, datasets=len(group), wer=wer, rtfx=rtfx))
    return out


def score_sources(sources: list[ManifestSource], protocol: Protocol | str) -> ScoreResult:
    """Read and score every source, then the composites."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    scores = [score_rows(read_manifest(s.path), protocol, s) for s in sources]
    return ScoreResult(
        protocol=protocol.name,
        description=protocol.description,
        normalizer=protocol.normalizer,
        counter=protocol.counter,
        datasets=scores,
        composites=composite_scores(scores),
    )
