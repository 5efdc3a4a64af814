"""Open ASR Leaderboard result manifests: naming, reading, chunk merging.

A manifest is JSONL, one utterance a line, as the leaderboard's ``write_manifest`` writes it::

    {"audio_filepath": "sample_0", "duration": 3.2, "time": 0.05,
     "text": "reference", "pred_text": "prediction"}

``text`` and ``pred_text`` are required strings; ``duration`` and ``time`` (seconds) are optional
numbers or null; long-form sets split into chunks add ``parent_id`` and ``chunk_index`` (every
row then needs both). Other keys are ignored.

One file per dataset, named ``MODEL_<model>_DATASET_<dataset>_<split>.jsonl`` (the leaderboard's
names, e.g. ``MODEL_openai-whisper-large-v3_DATASET_esb_ami_test.jsonl``) or given as
``name=path``. Directories are searched recursively for ``*.jsonl``.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from nemo_neko.eval.inputs import InputError, iter_json_objects, require_string

LEADERBOARD_NAME = re.compile(
    r"^MODEL_(?P<model>.+?)_DATASET_(?P<dataset>.+)_(?P<split>[^_]+)\.jsonl$"
)
"""``MODEL_<model>_DATASET_<dataset>_<split>.jsonl``; the leaderboard keys results by
``<dataset>_<split>``, which is what :attr:`ManifestSource.dataset` holds."""

UNNAMED_MODEL = "-"
"""Model of files given as ``name=path``."""


@dataclass(frozen=True)
class ManifestSource:
    """One input file and what it holds."""

    path: str
    model: str
    dataset: str
    """Dataset key as the leaderboard prints it (``<dataset>_<split>``), or the given name."""
    split: str | None = None


@dataclass(frozen=True)
class ManifestRow:
    """One utterance (or, before merging, one chunk) of a manifest."""

    line: int
    text: str
    pred_text: str
    duration: float | None = None
    time: float | None = None
    audio_filepath: str | None = None
    parent_id: str | None = None
    chunk_index: int | None = None


def parse_leaderboard_name(path: str | os.PathLike) -> ManifestSource:
    """Model and dataset from a leaderboard file name; ``ValueError`` when it does not match."""
    name = Path(path).name
    match = LEADERBOARD_NAME.match(name)
    if match is None:
        raise ValueError(
            f"{path}: file name does not follow the leaderboard naming "
            "MODEL_<model>_DATASET_<dataset>_<split>.jsonl; pass it as name=path instead"
        )
    dataset = f"{match['dataset']}_{match['split']}"
    return ManifestSource(str(path), match["model"], dataset, match["split"])


def expand_inputs(arguments: list[str]) -> list[ManifestSource]:
    """Sources for command-line arguments: leaderboard files, ``name=path`` pairs, directories.

    Raises:
        ValueError: a name that does not match, an empty directory, or the same (model, dataset)
            twice.
        FileNotFoundError: a path that does not exist.
    """
    sources: list[ManifestSource] = []
    for arg in arguments:
        if "=" in arg and not os.path.exists(arg):
            name, path = arg.split("=", 1)
            if not name or not path:
                raise ValueError(f"{arg!r}: expected name=path")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{arg!r}: no such file {path!r}")
            sources.append(ManifestSource(path, UNNAMED_MODEL, name))
        elif os.path.isdir(arg):
            found = sorted(str(p) for p in Path(arg).rglob("*.jsonl"))
            if not found:
                raise ValueError(f"{arg}: no *.jsonl files in this directory")
            sources.extend(parse_leaderboard_name(p) for p in found)
        elif os.path.isfile(arg):
            sources.append(parse_leaderboard_name(arg))
        else:
            raise FileNotFoundError(f"{arg!r}: no such file or directory")
    seen: dict[tuple[str, str], str] = {}
    for source in sources:
        key = (source.model, source.dataset)
        if key in seen:
            raise ValueError(
                f"dataset {source.dataset!r} of model {source.model!r} given twice: "
                f"{seen[key]} and {source.path}"
            )
        seen[key] = source.path
    return sources


def _optional_seconds(path: str, line: int, data: dict, field: str) -> float | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(
            path, line, field, f"must be a number of seconds or null, got {value!r:.40}"
        )
    if not math.isfinite(value) or value < 0:
        raise InputError(path, line, field, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def _chunk_fields(path: str, line: int, data: dict) -> tuple[str | None, int | None]:
    has_parent, has_index = "parent_id" in data, "chunk_index" in data
    if not has_parent and not has_index:
        return None, None
    if has_parent != has_index:
        missing = "chunk_index" if has_parent else "parent_id"
        raise InputError(path, line, missing, "chunked rows need both parent_id and chunk_index")
    parent, index = data["parent_id"], data["chunk_index"]
    if isinstance(parent, bool) or not isinstance(parent, (str, int)) or parent == "":
        raise InputError(
            path, line, "parent_id", f"must be a non-empty string or integer, got {parent!r:.40}"
        )
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(path, line, "chunk_index", f"must be an integer >= 0, got {index!r:.40}")
    return str(parent), index


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of one manifest, validated (see the module docstring).

    Raises:
        InputError: malformed JSON, a missing or mistyped field, chunk fields on only some rows,
            or a file without rows.
    """
    path = str(path)
    rows: list[ManifestRow] = []
    for line, data in iter_json_objects(path):
        text = require_string(path, line, data, "text", " (the reference)")
        pred = require_string(path, line, data, "pred_text", ' (use "" for an empty prediction)')
        audio = data.get("audio_filepath")
        parent, index = _chunk_fields(path, line, data)
        if rows and (rows[0].parent_id is None) != (parent is None):
            first = rows[0]
            raise InputError(
                path,
                line,
                "parent_id",
                f"chunk fields on some rows only (line {first.line} "
                f"{'has none' if first.parent_id is None else 'has them'})",
            )
        rows.append(
            ManifestRow(
                line=line,
                text=text,
                pred_text=pred,
                duration=_optional_seconds(path, line, data, "duration"),
                time=_optional_seconds(path, line, data, "time"),
                audio_filepath=audio if isinstance(audio, str) else None,
                parent_id=parent,
                chunk_index=index,
            )
        )
    if not rows:
        raise InputError(path, 1, None, "no rows: the manifest is empty")
    return rows


def is_chunked(rows: list[ManifestRow]) -> bool:
    """Whether the rows are chunks of longer sessions (``parent_id`` present)."""
    return bool(rows) and rows[0].parent_id is not None


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)


def merge_chunks(rows: list[ManifestRow], path: str) -> tuple[list[ManifestRow], list[str]]:
    """One row per session: chunk predictions joined in ``chunk_index`` order (empty ones left
    out), durations and times summed. Unchunked rows come back unchanged.

    Returns:
        The merged rows (sessions in sorted ``parent_id`` order) and notes for the output, e.g.
        sessions whose chunk indices are not 0, 1, 2, ... (missing chunks show up as deletions).

    Raises:
        InputError: two chunks of one session with the same index, or different references.
    """
    if not is_chunked(rows):
        return rows, []
    sessions: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        sessions[row.parent_id].append(row)
    merged, notes = [], []
    for parent in sorted(sessions):
        chunks = sorted(sessions[parent], key=lambda r: (r.chunk_index, r.line))
        for before, after in zip(chunks, chunks[1:]):
            if before.chunk_index == after.chunk_index:
                raise InputError(
                    path,
                    after.line,
                    "chunk_index",
                    f"session {parent!r} has chunk {after.chunk_index} twice "
                    f"(also line {before.line})",
                )
        for chunk in chunks[1:]:
            if chunk.text != chunks[0].text:
                raise InputError(
                    path,
                    chunk.line,
                    "text",
                    f"chunks of session {parent!r} must carry the same session reference "
                    f"(line {chunks[0].line} differs)",
                )
        indices = [c.chunk_index for c in chunks]
        if indices != list(range(len(indices))):
            notes.append(
                f"{path}: session {parent!r}: chunk indices {indices} are not contiguous from 0; "
                "missing chunks count as deletions"
            )
        merged.append(
            replace(
                chunks[0],
                pred_text=" ".join(p for c in chunks if (p := c.pred_text.strip())),
                duration=_sum_or_none([c.duration for c in chunks]),
                time=_sum_or_none([c.time for c in chunks]),
                audio_filepath=parent,
                chunk_index=None,
            )
        )
    return merged, notes
