"""lhotse cut manifests in and out: checked reading, 16 kHz audio, N-best on supervisions, atomic
byte-reproducible writing.

Input rules (checked on read, errors name the manifest, the line (= cut position) and the field):
every cut has exactly one supervision (recipes produce that with ``trim_to_supervisions``), its
``text`` is a string (the reference), the cut has a recording and a positive duration, and cut
ids are unique. Output: the same cuts, the supervision's ``custom`` gaining

=====================  ============================================================================
``nbest``              hypotheses, best first (what :mod:`nemo_neko.data.importers.lhotse_cuts`
                       turns into a record's ``hypotheses``)
``nbest_scores``       one score per hypothesis, when the method gives scores
``nbest_method``       which recogniser and method made them (e.g. ``canary-beam5``)
=====================  ============================================================================

Manifests are written as lhotse JSONL (``cut.to_dict()`` per line), gzip-compressed without a
timestamp in the header, to a temporary name and renamed: the same cuts give the same bytes, and a
killed writer never leaves a half-written manifest under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nemo_neko.asr.nbest import NBest
from nemo_neko.data.records import RecordError
from nemo_neko.utils.jsonl import write_jsonl

LHOTSE_HINT = "lhotse manifests need lhotse: pip install lhotse"
NBEST_KEY, SCORES_KEY, METHOD_KEY = "nbest", "nbest_scores", "nbest_method"


@dataclass(frozen=True)
class CutInfo:
    """What the batch plan needs of one cut."""

    id: str
    duration: float
    line: int


def _lazy_cuts(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line, cut)`` of a manifest, read lazily; unreadable lines raise :class:`RecordError`."""
    try:
        from lhotse import CutSet
    except ImportError as err:
        raise ImportError(f"{path}: {LHOTSE_HINT}") from err
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such cut manifest")
    iterator = iter(
        CutSet.from_file(path) if ".jsonl" not in path else CutSet.from_jsonl_lazy(path)
    )
    line = 0
    while True:
        line += 1
        try:
            cut = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # lhotse raises many kinds for a bad line
            raise RecordError(path, line, None, f"lhotse could not read the cut: {err}") from err
        yield line, cut


def check_cut(cut: Any, path: str, line: int) -> CutInfo:
    """The plan entry of one input cut; a :class:`RecordError` when it breaks the input rules."""
    sups = getattr(cut, "supervisions", None)
    if sups is None:
        raise RecordError(path, line, None, f"expected a lhotse cut, got {type(cut).__name__}")
    if len(sups) != 1:
        raise RecordError(
            path,
            line,
            "supervisions",
            f"cut {cut.id!r} has {len(sups)} supervisions; N-best generation needs exactly one "
            "per cut (split long recordings with CutSet.trim_to_supervisions)",
        )
    if not isinstance(sups[0].text, str):
        raise RecordError(path, line, "supervisions[0].text", f"cut {cut.id!r}: no reference text")
    if not getattr(cut, "has_recording", False):
        raise RecordError(path, line, "recording", f"cut {cut.id!r} has no audio recording")
    if not cut.duration > 0:
        raise RecordError(path, line, "duration", f"cut {cut.id!r}: duration {cut.duration}")
    return CutInfo(cut.id, float(cut.duration), line)


def scan_cuts(path: str | os.PathLike) -> list[CutInfo]:
    """Check every cut of an input manifest (see the module docstring) and list them.

    Raises:
        RecordError: the first broken cut or a repeated cut id (file, line, field).
    """
    infos: list[CutInfo] = []
    first_line: dict[str, int] = {}
    for line, cut in _lazy_cuts(path):
        info = check_cut(cut, str(path), line)
        if info.id in first_line:
            raise RecordError(
                str(path),
                line,
                "id",
                f"duplicate cut id {info.id!r} (first on line {first_line[info.id]})",
            )
        first_line[info.id] = line
        infos.append(info)
    return infos


def read_cuts(path: str | os.PathLike, ids: set[str] | None = None) -> dict[str, Any]:
    """Cuts of a manifest by id (only those in ``ids`` when given)."""
    return {cut.id: cut for _, cut in _lazy_cuts(path) if ids is None or cut.id in ids}


def load_audio(cut: Any, sample_rate: int = 16000) -> np.ndarray:
    """A cut's audio as ``[samples]`` float32 mono at ``sample_rate`` (channels averaged)."""
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    try:
        audio = cut.load_audio()
    except Exception as err:
        raise RuntimeError(f"cut {cut.id!r}: could not load its audio: {err}") from err
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]
    return np.ascontiguousarray(audio)


def attach_nbest(cut: Any, nbest: NBest, method: str) -> Any:
    """A copy of ``cut`` whose supervision carries the N-best list (see the module docstring)."""
    from lhotse.utils import fastcopy

    sup = cut.supervisions[0]
    custom = dict(sup.custom or {})
    custom[NBEST_KEY] = list(nbest.texts)
    if nbest.scores is not None:
        custom[SCORES_KEY] = list(nbest.scores)
    else:
        custom.pop(SCORES_KEY, None)
    custom[METHOD_KEY] = method
    return fastcopy(cut, supervisions=[fastcopy(sup, custom=custom)])


def nbest_of(cut: Any) -> list[str] | None:
    """The stored N-best list of a cut's single supervision (None when absent or malformed)."""
    sups = getattr(cut, "supervisions", None) or []
    if len(sups) != 1:
        return None
    nbest = (sups[0].custom or {}).get(NBEST_KEY)
    ok = isinstance(nbest, list) and nbest and all(isinstance(h, str) for h in nbest)
    return nbest if ok else None


def write_cuts(path: str | os.PathLike, cuts: Iterable[Any]) -> int:
    """Write cuts as a lhotse JSONL manifest, atomically and byte-reproducibly
    (:func:`nemo_neko.utils.jsonl.write_jsonl`). Returns the count."""
    return write_jsonl(path, (json.dumps(cut.to_dict(), ensure_ascii=False) for cut in cuts))
