"""The Open ASR Leaderboard's own test sets, from local snapshots of its Hugging Face datasets.

The leaderboard's English average (huggingface/open_asr_leaderboard at d1e99b2, 2026-08-21) is
over seven sets it serves itself, not the original corpora: six from
``hf-audio/open-asr-leaderboard`` (configs ``ami_cleaned``, ``gigaspeech_cleaned``,
``librispeech`` splits ``test.clean``/``test.other``, ``spgispeech``, ``voxpopuli_cleaned_aa``,
split ``test``) and the chunked ``ArtificialAnalysis/Earnings22-Cleaned-AA-chunked``, whose
chunks (``parent_id``, ``chunk_index``, ``file_name``, audio in the repo's ``audio/`` folder) are
scored per call against the call's transcript in ``ArtificialAnalysis/Earnings22-Cleaned-AA``
(``normalizer/data_utils.py``: ``load_chunked_data``, ``CHUNKED_DATASETS``).

This recipe reads what ``huggingface-cli download --repo-type dataset <repo> --local-dir <dir>``
leaves, with pyarrow (no ``datasets``): a config's split is ``<config>/<split>-NNNNN-of-NNNNN
.parquet`` (or the files the dataset card's ``configs:`` names), rows with an ``audio`` struct
``{bytes, path}``, an ``id`` and a transcript column (the first of ``text``, ``sentence``,
``normalized_text``, ``transcript``, ``transcription``: upstream's ``get_text``). Each row's
audio bytes go to ``<output_dir>/audio/<set>/<id>.<flac|wav|mp3|ogg>`` (atomically; an
identical file is left alone) and one cut per row to ``<output_dir>/<dataset>_cuts_<split>
.jsonl.gz``, which :func:`nemo_neko.eval.leaderboard.sets.find_sets` reads as the set
``<dataset>_<split>``: the parts are the leaderboard's keys (``OAL2026_SETS``).

A cut's id is the dataset's ``id`` (a chunk without one: its ``file_name`` without the
extension), its one supervision's text the raw reference the leaderboard scores against (it
normalises at scoring time); a chunk's text is its call's transcript (as upstream) and its
supervision's ``custom`` holds ``parent_id``, ``chunk_index`` and ``parent_text``. As upstream's
``prepare_data`` does before inference, rows whose reference is empty (or "ignore time segment
in scoring") after the ``oal2026`` normaliser are left out, and counted in the log.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_neko.asr.recipes._common import (
    CorpusInfo,
    ManualDownloadRequired,
    RecipeInputError,
    cuts_manifest,
    prepare_parts,
)

log = logging.getLogger(__name__)

MAIN_REPO = "hf-audio/open-asr-leaderboard"
CHUNKED_REPO = "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked"
PARENTS_REPO = "ArtificialAnalysis/Earnings22-Cleaned-AA"
CHUNKED_SET = "earnings22_cleaned_aa_chunked_test"
CHUNK_AUDIO_DIR = "audio"
"""Folder of the chunked repo holding the chunks' audio (upstream's ``audio_dir``)."""

SETS: dict[str, tuple[str, str]] = {
    "ami_cleaned_test": ("ami_cleaned", "test"),
    CHUNKED_SET: ("earnings22_cleaned_aa_chunked", "test"),
    "gigaspeech_cleaned_test": ("gigaspeech_cleaned", "test"),
    "librispeech_test.clean": ("librispeech", "test.clean"),
    "librispeech_test.other": ("librispeech", "test.other"),
    "spgispeech_test": ("spgispeech", "test"),
    "voxpopuli_cleaned_aa_test": ("voxpopuli_cleaned_aa", "test"),
}
"""Set key -> (dataset config, split); the keys are ``OAL2026_SETS``."""

TEXT_COLUMNS = ("text", "sentence", "normalized_text", "transcript", "transcription")
"""Upstream ``get_text``'s transcript columns, in its order."""

CORPUS = CorpusInfo(
    name="open_asr_leaderboard",
    train_parts=(),
    eval_parts=tuple(SETS),
    source=(
        f"https://huggingface.co/datasets/{MAIN_REPO}, {CHUNKED_REPO}, {PARENTS_REPO} "
        "(huggingface-cli download)"
    ),
)


def download_open_asr_leaderboard(target_dir: str | Path, parts: Any = None) -> Path:
    """Not done here (needs the Hugging Face hub): the commands to run where it is reachable."""
    raise ManualDownloadRequired(
        f"on a machine with hub access: huggingface-cli download --repo-type dataset {MAIN_REPO} "
        "--include README.md 'ami_cleaned/*' 'gigaspeech_cleaned/*' 'librispeech/test.*' 'spgispeech/*' "
        f"'voxpopuli_cleaned_aa/*' --local-dir {target_dir}/open-asr-leaderboard; "
        f"huggingface-cli download --repo-type dataset {CHUNKED_REPO} "
        f"--local-dir {target_dir}/earnings22-chunked; huggingface-cli download --repo-type "
        f"dataset {PARENTS_REPO} --local-dir {target_dir}/earnings22-parents "
        "(https://huggingface.co/datasets/" + MAIN_REPO + ")"
    )


# --- the snapshot's files ------------------------------------------------------------------

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def _card_patterns(root: Path, config: str, split: str) -> list[str] | None:
    """``data_files`` of ``config``/``split`` in the dataset card's ``configs:``, or None."""
    card = root / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        import yaml

        meta = yaml.safe_load(text[3:end]) or {}
    except Exception:  # no yaml, or a card it cannot read: the default layout
        return None
    for entry in meta.get("configs") or []:
        if not isinstance(entry, dict) or entry.get("config_name", "default") != config:
            continue
        files = entry.get("data_files")
        if isinstance(files, (str, list)) and not (
            isinstance(files, list) and files and isinstance(files[0], dict)
        ):
            files = [{"split": "train", "path": files}]
        if isinstance(files, dict):
            files = [{"split": k, "path": v} for k, v in files.items()]
        for item in files or []:
            if isinstance(item, dict) and item.get("split") == split:
                paths = item.get("path")
                return [paths] if isinstance(paths, str) else list(paths or [])
    return None


def split_files(root: str | Path, config: str, split: str) -> list[Path]:
    """The table files of ``config``/``split`` in a snapshot, sorted.

    The dataset card's ``configs:`` when it names them, else Hugging Face's layouts:
    ``<config>/<split>-*.parquet`` (``push_to_hub``), ``<config>/<split>/*.parquet`` (the
    parquet conversion), ``data/<split>-*`` (a single-config repo, ``config="default"``).

    Raises:
        RecipeInputError: nothing found (the folder and the patterns tried named).
    """
    root = Path(root)
    patterns = _card_patterns(root, config, split)
    if not patterns:
        base = ["data/", ""] if config == "default" else [f"{config}/", f"data/{config}/"]
        patterns = [
            f"{prefix}{name}"
            for prefix in base
            for name in (f"{split}-*", f"{split}/*", f"{split}.*")
        ]
    found: set[Path] = set()
    for pattern in patterns:
        found.update(
            p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
        )
    if not found:
        raise RecipeInputError(
            f"{root}: no table files for config {config!r} split {split!r} (looked for "
            f"{', '.join(patterns)}); is this a snapshot of the right dataset repo?"
        )
    return sorted(found)


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    return list(_read_table(path).column_names)


def _read_table(path: Path, columns: list[str] | None = None):
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=columns)
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path)
    else:
        import pyarrow.json as pjson

        table = pjson.read_json(path)
    return table.select(columns) if columns else table


def _text_column(path: Path, names: list[str]) -> str:
    for name in TEXT_COLUMNS:
        if name in names:
            return name
    raise RecipeInputError(
        f"{path}: no transcript column (expected one of {', '.join(TEXT_COLUMNS)}; "
        f"has {', '.join(names)})"
    )


def iter_rows(files: Sequence[Path], columns: Sequence[str]) -> Iterator[tuple[Path, dict]]:
    """``(file, row)`` of ``files``, parquet read a batch at a time (only ``columns``)."""
    for path in files:
        names = _columns(path)
        missing = [c for c in columns if c not in names]
        if missing:
            raise RecipeInputError(
                f"{path}: column(s) {', '.join(missing)} missing (has {', '.join(names)})"
            )
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=64, columns=list(columns)):
                for row in batch.to_pylist():
                    yield path, row
        else:
            for row in _read_table(path, list(columns)).to_pylist():
                yield path, row


# --- audio ---------------------------------------------------------------------------------


def audio_suffix(data: bytes, name: str | None = None) -> str:
    """The audio format of ``data`` from its first bytes (else from ``name``'s extension)."""
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"OggS":
        return ".ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return ".mp3"
    suffix = Path(name or "").suffix.lower()
    if suffix:
        return suffix
    raise ValueError(f"unknown audio format (first bytes {data[:12]!r}, name {name!r})")


def write_audio(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically; False (nothing done) when it already holds it."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _file_stem(cut_id: str) -> str:
    """A file name for ``cut_id``: ``/`` -> ``_``, an audio extension dropped (as upstream)."""
    stem = cut_id.replace("/", "_").replace(os.sep, "_")
    for suffix in (".wav", ".flac", ".mp3", ".ogg"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


# --- references ----------------------------------------------------------------------------


@dataclass
class Dropped:
    """Rows left out of a set: normalised reference empty / "ignore time segment in scoring"."""

    empty: int = 0
    ignored: int = 0


def _keep(text: str | None, dropped: Dropped) -> bool:
    """Upstream ``is_target_text_in_range`` on the ``oal2026``-normalised reference."""
    from nemo_neko.eval.normalizer import get_normalizer
    from nemo_neko.eval.protocols import IGNORED_REFERENCE

    norm = get_normalizer("oal2026")(text or "").strip()
    if norm == "":
        dropped.empty += 1
        return False
    if norm == IGNORED_REFERENCE:
        dropped.ignored += 1
        return False
    return True


def _cut(audio_path: Path, cut_id: str, text: str, custom: dict | None = None):
    from lhotse import Recording, SupervisionSegment

    recording = Recording.from_file(audio_path.resolve(), recording_id=cut_id)
    channel = recording.channel_ids[0] if len(recording.channel_ids) == 1 else recording.channel_ids
    cut = recording.to_cut()
    cut.supervisions = [
        SupervisionSegment(
            id=cut_id,
            recording_id=cut_id,
            start=0.0,
            duration=recording.duration,
            channel=channel,
            text=text,
            language="en",
            custom=custom or None,
        )
    ]
    return cut


def _report(name: str, kept: int, dropped: Dropped, written: int) -> None:
    log.info(
        "open_asr_leaderboard %s: %d utterances; left out as the leaderboard does (reference "
        "empty after normalisation: %d, 'ignore time segment in scoring': %d); %d audio files "
        "written, %d already there",
        name,
        kept,
        dropped.empty,
        dropped.ignored,
        written,
        kept - written,
    )


def config_cuts(root: Path, name: str, audio_dir: Path) -> Iterator[Any]:
    """The cuts of one ``hf-audio/open-asr-leaderboard`` set (lazy: audio written as it goes)."""
    config, split = SETS[name]
    files = split_files(root, config, split)
    text_column = _text_column(files[0], _columns(files[0]))
    dropped, kept, written = Dropped(), 0, 0
    for path, row in iter_rows(files, ["id", text_column, "audio"]):
        text = row[text_column]
        if not _keep(text, dropped):
            continue
        cut_id = str(row["id"])
        audio = row["audio"] or {}
        data = audio.get("bytes") if isinstance(audio, dict) else None
        source = audio.get("path") if isinstance(audio, dict) else None
        if data is None:
            local = (path.parent / source) if source else None
            if local is None or not local.is_file():
                raise RecipeInputError(
                    f"{path}: row {cut_id!r} has no audio bytes (and no file {source!r} beside it)"
                )
            data = local.read_bytes()
        target = audio_dir / f"{_file_stem(cut_id)}{audio_suffix(data, source)}"
        written += write_audio(target, data)
        kept += 1
        yield _cut(target, cut_id, text)
    _report(name, kept, dropped, written)


def parent_transcripts(parents_dir: Path, split: str) -> dict[str, str]:
    """``{id: transcript}`` of the parent calls' snapshot (only those two columns read)."""
    files = split_files(parents_dir, "default", split)
    out: dict[str, str] = {}
    for path in files:
        text_column = _text_column(path, _columns(path))
        for _, row in iter_rows([path], ["id", text_column]):
            out[str(row["id"])] = row[text_column]
    return out


def chunked_cuts(chunked_dir: Path, parents_dir: Path, audio_dir: Path) -> Iterator[Any]:
    """The cuts of the chunked Earnings-22 (every parent checked before anything is written)."""
    split = SETS[CHUNKED_SET][1]
    files = split_files(chunked_dir, "default", split)
    names = _columns(files[0])
    columns = ["parent_id", "chunk_index", "file_name"] + (["id"] if "id" in names else [])
    rows = [row for _, row in iter_rows(files, columns)]
    parents = parent_transcripts(parents_dir, split)
    missing = sorted({str(r["parent_id"]) for r in rows} - set(parents))
    if missing:
        raise RecipeInputError(
            f"{parents_dir}: no transcript for parent id(s) {', '.join(missing)} of {chunked_dir} "
            f"(the chunked and parent snapshots are out of sync: {CHUNKED_REPO} needs {PARENTS_REPO})"
        )
    dropped, kept, written = Dropped(), 0, 0
    for row in rows:
        parent = str(row["parent_id"])
        text = parents[parent]
        if not _keep(text, dropped):
            continue
        file_name = str(row["file_name"])
        source = chunked_dir / CHUNK_AUDIO_DIR / file_name
        if not source.is_file():
            raise RecipeInputError(
                f"{chunked_dir}: chunk audio {CHUNK_AUDIO_DIR}/{file_name} not found (download "
                f"the repo's {CHUNK_AUDIO_DIR}/ folder too)"
            )
        cut_id = str(row["id"]) if row.get("id") not in (None, "") else _file_stem(file_name)
        data = source.read_bytes()
        target = audio_dir / f"{_file_stem(cut_id)}{audio_suffix(data, file_name)}"
        written += write_audio(target, data)
        kept += 1
        custom = {"parent_id": parent, "chunk_index": int(row["chunk_index"]), "parent_text": text}
        yield _cut(target, cut_id, text, custom)
    _report(CHUNKED_SET, kept, dropped, written)


def manifest_path(output_dir: str | Path, name: str) -> Path:
    """``<output_dir>/<dataset>_cuts_<split>.jsonl.gz``: found by ``find_sets`` as ``name``."""
    config, split = SETS[name]
    return cuts_manifest(output_dir, config, split)


def prepare_open_asr_leaderboard(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    chunked: str | None = None,
    parents: str | None = None,
) -> dict[str, Path]:
    """Cut manifests of the leaderboard's sets (``parts``: set keys or ``eval``/``all``).

    Args:
        corpus_dir: a snapshot of ``hf-audio/open-asr-leaderboard`` (the six plain sets).
        output_dir: manifests, and the audio under ``audio/<set>/``.
        parts: set keys (``ami_cleaned_test``, ``librispeech_test.clean``, ...); default all.
        force: rebuild complete manifests too.
        chunked: a snapshot of ``ArtificialAnalysis/Earnings22-Cleaned-AA-chunked`` (needed for
            ``earnings22_cleaned_aa_chunked_test``).
        parents: a snapshot of ``ArtificialAnalysis/Earnings22-Cleaned-AA`` (the calls'
            transcripts; needed with ``chunked``).

    Raises:
        RecipeInputError: an unknown set, a missing snapshot, file or column, a chunk whose
            call has no transcript (one line each).
    """
    names = CORPUS.select(parts)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise RecipeInputError(
            f"unknown set(s) {', '.join(unknown)} (known: {', '.join(SETS)}, or eval/all)"
        )
    output_dir = Path(output_dir)

    def build(todo: list[str]) -> dict:
        out = {}
        for name in todo:
            audio_dir = output_dir / "audio" / name
            if name == CHUNKED_SET:
                if not chunked or not parents:
                    raise RecipeInputError(
                        f"{CHUNKED_SET} needs --option chunked=<snapshot of {CHUNKED_REPO}> and "
                        f"--option parents=<snapshot of {PARENTS_REPO}>"
                    )
                for what, folder in (("chunked", chunked), ("parents", parents)):
                    if not Path(folder).is_dir():
                        raise RecipeInputError(f"{what}={folder}: no such folder")
                # consumed now: a parent without transcript stops the run before any writing
                cuts = chunked_cuts(Path(chunked), Path(parents), audio_dir)
                out[name] = _primed(cuts)
            else:
                if not Path(corpus_dir).is_dir():
                    raise RecipeInputError(f"{corpus_dir}: no such folder (a {MAIN_REPO} snapshot)")
                split_files(corpus_dir, *SETS[name])  # fail early when the files are absent
                out[name] = config_cuts(Path(corpus_dir), name, audio_dir)
        return out

    return prepare_parts(
        CORPUS,
        output_dir,
        names,
        build,
        force=force,
        manifest=lambda name: manifest_path(output_dir, name),
    )


def _primed(cuts: Iterator[Any]) -> Iterator[Any]:
    """``cuts`` with its checks (everything before the first cut) run now, not when written."""
    try:
        first = next(cuts)
    except StopIteration:
        return iter(())

    def chained() -> Iterator[Any]:
        yield first
        yield from cuts

    return chained()
