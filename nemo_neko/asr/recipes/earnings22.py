"""Earnings-22: 125 English earnings calls (119 hours), long-form, segmented here into utterances.

lhotse's ``prepare_earnings22`` gives one supervision per call (the whole transcript, no times),
which a recogniser cannot use. The corpus also ships forced-aligned references,
``<corpus_dir>/transcripts/force_aligned_nlp_references/<id>.aligned.nlp``: pipe-separated
``token|speaker|ts|endTs|punctuation|...`` lines, one per word, with start and end times
(empty for the few words the aligner deleted). This recipe takes the recordings from lhotse and
cuts every call into utterances with :func:`segment_tokens`:

* an utterance ends after a word with sentence-final punctuation (``.``, ``?``, ``!``);
* it also ends before a speaker change, a pause longer than ``max_pause`` seconds, or a word
  that would make it longer than ``max_duration`` seconds;
* untimed words stay in the text of the utterance they fall in (words before the first timed
  word go to the first utterance); the text is the words joined by spaces (as lhotse's own
  Earnings-22 reference), lower-cased and stripped of punctuation with ``normalize_text``.

Splits: the corpus has none. Without ``split_file`` the single part is ``all``; with a
``split_file`` (``<recording id><TAB><part>`` lines, e.g. ESB's train/validation/test lists)
the parts are the ones it names. Leaderboard test set: ESB's ``test`` split (needs its list).
lhotse cannot download Earnings-22: clone https://github.com/revdotcom/speech-datasets with
git-lfs and use its ``earnings22`` folder.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_neko.asr.recipes._common import (
    CorpusInfo,
    ManualDownloadRequired,
    cuts_from_manifests,
    lhotse_dir,
    prepare_parts,
)
from nemo_neko.data.records import RecordError

log = logging.getLogger(__name__)

CORPUS = CorpusInfo(
    name="earnings22",
    train_parts=("train",),
    dev_parts=("dev",),
    eval_parts=("test",),
    source="https://github.com/revdotcom/speech-datasets (earnings22 folder, needs git-lfs)",
)
ALIGNED_DIR = Path("transcripts") / "force_aligned_nlp_references"
NLP_COLUMNS = ("token", "speaker", "ts", "endTs", "punctuation")
SENTENCE_END = frozenset(".?!")


@dataclass(frozen=True)
class AlignedToken:
    """One word of a forced-aligned reference (times None when the aligner dropped it)."""

    text: str
    speaker: str
    start: float | None
    end: float | None
    punctuation: str = ""


@dataclass(frozen=True)
class Segment:
    """One utterance: ``[start, end)`` seconds in the recording."""

    start: float
    end: float
    text: str
    speaker: str


def read_aligned_nlp(path: str | Path) -> list[AlignedToken]:
    """Words of an ``.aligned.nlp`` file.

    Raises:
        RecordError: a missing column, a malformed line or a bad time (file, line, column).
    """
    path = str(path)
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("|")
        missing = [c for c in NLP_COLUMNS if c not in header]
        if missing:
            raise RecordError(path, 1, missing[0], f"header lacks column(s) {', '.join(missing)}")
        col = {name: header.index(name) for name in NLP_COLUMNS}
        tokens = []
        for line_no, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("|")
            if len(fields) < len(header):
                raise RecordError(
                    path, line_no, None, f"{len(fields)} fields, header has {len(header)}"
                )
            times = []
            for name in ("ts", "endTs"):
                value = fields[col[name]].strip()
                try:
                    times.append(float(value) if value else None)
                except ValueError:
                    raise RecordError(path, line_no, name, f"not a time: {value!r}") from None
            start, end = times
            if (start is None) != (end is None) or (start is not None and end < start):
                raise RecordError(path, line_no, "ts", f"bad word times {start}..{end}")
            tokens.append(
                AlignedToken(
                    fields[col["token"]],
                    fields[col["speaker"]],
                    start,
                    end,
                    fields[col["punctuation"]],
                )
            )
    return tokens


def segment_tokens(
    tokens: Sequence[AlignedToken],
    *,
    max_duration: float = 20.0,
    max_pause: float = 2.0,
    normalize_text: bool = False,
) -> list[Segment]:
    """Utterances of one call (see the module docstring for the rules)."""
    segments: list[Segment] = []
    current: list[AlignedToken] = []
    pending: list[AlignedToken] = []  # untimed words before the first timed one

    def timed(group: Sequence[AlignedToken]) -> list[AlignedToken]:
        return [t for t in group if t.start is not None]

    def flush() -> None:
        nonlocal current, pending
        words = pending + current
        stamped = timed(words)
        if stamped and stamped[-1].end > stamped[0].start:
            text = " ".join(t.text for t in words)
            if normalize_text:
                text = " ".join(
                    text.translate(str.maketrans("", "", string.punctuation)).lower().split()
                )
            segments.append(Segment(stamped[0].start, stamped[-1].end, text, words[0].speaker))
            pending = []
        else:  # nothing to place it by: carry the words into the next utterance
            pending = words
        current = []

    for token in tokens:
        if current:
            stamped = timed(current)
            if token.speaker != current[-1].speaker:
                flush()
            elif token.start is not None and stamped:
                if (
                    token.start - stamped[-1].end > max_pause
                    or token.end - stamped[0].start > max_duration
                ):
                    flush()
        current.append(token)
        if token.punctuation and token.punctuation[-1] in SENTENCE_END:
            flush()
    if current or pending:
        flush()
    if pending and segments:  # trailing untimed words: the last utterance's text
        last = segments[-1]
        tail = " ".join(t.text for t in pending)
        segments[-1] = Segment(last.start, last.end, f"{last.text} {tail}", last.speaker)
    return segments


def earnings22_supervisions(
    recordings: Any,
    aligned_dir: str | Path,
    *,
    language: dict[str, str] | None = None,
    max_duration: float = 20.0,
    max_pause: float = 2.0,
    normalize_text: bool = False,
) -> Any:
    """A ``SupervisionSet`` of utterances for every recording, from its ``.aligned.nlp`` file.

    Raises:
        FileNotFoundError: a recording without its aligned reference (named).
    """
    from lhotse import SupervisionSegment, SupervisionSet

    sups = []
    for rec in recordings:
        path = Path(aligned_dir) / f"{rec.id}.aligned.nlp"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: aligned reference of recording {rec.id!r} not found")
        segments = segment_tokens(
            read_aligned_nlp(path),
            max_duration=max_duration,
            max_pause=max_pause,
            normalize_text=normalize_text,
        )
        for k, seg in enumerate(segments):
            end = min(seg.end, rec.duration)
            if end <= seg.start:
                log.warning("%s: utterance %d starts after the audio ends, left out", path, k)
                continue
            sups.append(
                SupervisionSegment(
                    id=f"{rec.id}-{k:05d}",
                    recording_id=rec.id,
                    start=round(seg.start, 4),
                    duration=round(end - seg.start, 4),
                    channel=0,
                    text=seg.text,
                    speaker=f"{rec.id}-{seg.speaker}",
                    language=(language or {}).get(rec.id, "English"),
                )
            )
    return SupervisionSet.from_segments(sups)


def read_split_file(path: str | Path) -> dict[str, str]:
    """``recording id -> part`` from ``<id><TAB><part>`` lines."""
    split: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not all(f.strip() for f in fields):
                raise RecordError(str(path), line_no, None, "expected '<recording id><TAB><part>'")
            split[fields[0].strip()] = fields[1].strip()
    return split


def download_earnings22(target_dir: str | Path) -> Path:
    """lhotse cannot download Earnings-22: raises with the instructions."""
    raise ManualDownloadRequired(
        f"Earnings-22 is in a git-lfs repository: {CORPUS.source}. Clone it (git lfs install; "
        f"git clone ...) and use its earnings22 folder, e.g. {Path(target_dir) / 'earnings22'}."
    )


def prepare_earnings22(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    split_file: str | None = None,
    max_duration: float = 20.0,
    max_pause: float = 2.0,
    normalize_text: bool = False,
) -> dict[str, Path]:
    """Utterance-level cut manifests of Earnings-22 (see the module docstring).

    Args:
        corpus_dir: the ``earnings22`` folder (``media/*.mp3``, ``metadata.csv``, transcripts).
        output_dir: manifest folder.
        parts: parts wanted (default: ``all`` without a split file, else every part it names).
        force: rebuild complete manifests too.
        split_file: ``<recording id><TAB><part>`` lines.
        max_duration, max_pause, normalize_text: segmentation (:func:`segment_tokens`).
    """
    split = read_split_file(split_file) if split_file else None
    if parts is None:
        wanted = sorted(set(split.values())) if split else ["all"]
    else:
        wanted = CORPUS.select(parts)
    if split is None and wanted != ["all"]:
        raise ValueError(
            f"Earnings-22 has no official splits: parts {wanted} need --split-file "
            "(<recording id><TAB><part> lines); without one the only part is 'all'"
        )

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_earnings22 as lhotse_prepare

        recordings, whole = lhotse_prepare(corpus_dir, lhotse_dir(output_dir))
        language = {s.recording_id: s.language for s in whole}
        sups = earnings22_supervisions(
            recordings,
            Path(corpus_dir) / ALIGNED_DIR,
            language=language,
            max_duration=max_duration,
            max_pause=max_pause,
            normalize_text=normalize_text,
        )
        built = {}
        for part in todo:
            ids = {r.id for r in recordings if split is None or split.get(r.id) == part}
            if not ids:
                raise ValueError(f"{split_file}: no recording of {corpus_dir} is in part {part!r}")
            built[part] = cuts_from_manifests(
                recordings.filter(lambda r, ids=ids: r.id in ids),
                sups.filter(lambda s, ids=ids: s.recording_id in ids),
            )
        return built

    return prepare_parts(CORPUS, output_dir, wanted, build, force=force)
