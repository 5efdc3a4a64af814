"""lhotse CutSet manifests with N-best supervisions -> ``asr`` records (the Canary bridge).

NeMo's Canary data preparation works on lhotse CutSets; the recogniser's N-best output is stored
on each supervision in lhotse's free-form ``custom`` dict, so a manifest written with
``CutSet.to_file`` carries everything a correction record needs. Sources read: lhotse's API
(``lhotse.CutSet.from_file``, ``lhotse.SupervisionSegment``: ``id``, ``recording_id``, ``start``,
``duration``, ``text``, ``language``, ``custom``; ``Cut.supervisions``), version 1.33. A
``.jsonl.gz`` manifest holds one cut per line, so cut ``N`` is line ``N`` in error messages.

One record per supervision of every cut:

==============================  ===================================================================
``custom["nbest"]``             N-best list, best first (non-empty list of strings) ->
                                ``hypotheses``; missing or empty is an error
``custom["nbest_scores"]``      optional, one number per hypothesis -> ``meta.nbest_scores``
other ``custom`` keys           copied to ``meta.custom`` (must be JSON values)
``text``                        reference transcript -> ``reference`` (``None`` is an error)
``id``                          -> record ``id`` (``id_from="cut"``: ``<cut id>-<index>``);
                                duplicates are an error
``language``                    -> ``meta.language`` when set
``recording_id``                -> ``meta.recording_id``
``start``, ``duration``         -> ``meta.start`` (seconds, relative to the cut, as lhotse
                                gives it), ``meta.duration``
cut ``id``, cut ``start``       -> ``meta.cut_id``, ``meta.cut_start``
==============================  ===================================================================

Not imported: audio, features, alignments, speaker and gender (a correction record is text).
Cuts without supervisions are counted in the report (``"cuts without supervisions"``), not
dropped unseen. lhotse is optional: it is imported when this function runs, with an install
hint when absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from numbers import Real
from pathlib import Path
from typing import Any

from nemo_neko.data.importers._common import (
    ImportReport,
    Row,
    Where,
    emit_records,
    json_value,
)
from nemo_neko.data.records import CorrectionRecord, RecordError

LHOTSE_HINT = "reading lhotse manifests needs lhotse: pip install lhotse"
NBEST_KEY = "nbest"
SCORES_KEY = "nbest_scores"
NO_SUPERVISIONS = "cuts without supervisions (nothing to correct)"


def import_lhotse_cuts(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    task: str = "asr",
    id_from: str = "supervision",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> Iterator[CorrectionRecord]:
    """Yield one record per supervision of a lhotse CutSet manifest.

    Args:
        path: a CutSet manifest (``.jsonl.gz``, ``.jsonl`` or anything ``CutSet.from_file`` reads).
        dataset: dataset name of the records (e.g. ``"librispeech"``).
        report: receives counts, cuts without supervisions and (with ``skip_invalid``) the
            rejected supervisions.
        skip_invalid: collect invalid supervisions in ``report`` instead of raising.
        task: task of the records (``"asr"``; ``"st"`` needs ``src_lang`` and ``tgt_lang``).
        id_from: ``"supervision"`` (record id = supervision id) or ``"cut"`` (``<cut id>-<i>``).
        src_lang: source language code for translation tasks.
        tgt_lang: target language code for translation tasks.

    Raises:
        ImportError: lhotse is not installed.
        RecordError: an invalid cut or supervision (unless ``skip_invalid``).
    """
    try:
        from lhotse import CutSet
    except ImportError as err:
        raise ImportError(f"{path}: {LHOTSE_HINT}") from err
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected rows")
    if id_from not in ("supervision", "cut"):
        raise ValueError(f"id_from must be 'supervision' or 'cut', got {id_from!r}")
    report = report if report is not None else ImportReport()
    origin = Path(path).name
    unit = "line" if ".jsonl" in origin else "item"

    def convert(row: tuple[Any, int, Any], where: Where) -> CorrectionRecord:
        cut, index, sup = row
        at = f"supervisions[{index}]"
        whose = f"cut {cut.id!r}, supervision {index} ({getattr(sup, 'id', None)!r})"
        custom = dict(getattr(sup, "custom", None) or {})
        if NBEST_KEY not in custom:
            raise where.error(f"{at}.custom['{NBEST_KEY}']", f"{whose}: missing N-best list")
        nbest = custom.pop(NBEST_KEY)
        if not isinstance(nbest, list) or not all(isinstance(h, str) for h in nbest):
            message = f"{whose}: must be a list of strings, got {type(nbest).__name__}"
            raise where.error(f"{at}.custom['{NBEST_KEY}']", message)
        if not nbest:
            raise where.error(f"{at}.custom['{NBEST_KEY}']", f"{whose}: empty hypothesis list")
        if sup.text is None or not isinstance(sup.text, str):
            raise where.error(f"{at}.text", f"{whose}: no reference text")
        meta: dict[str, Any] = {
            "origin": f"{origin}#{where.pos - 1}",
            "cut_id": cut.id,
            "cut_start": cut.start,
            "recording_id": sup.recording_id,
            "start": sup.start,
            "duration": sup.duration,
        }
        if sup.language:
            meta["language"] = sup.language
        if SCORES_KEY in custom:
            scores = custom.pop(SCORES_KEY)
            if (
                not isinstance(scores, list)
                or len(scores) != len(nbest)
                or not all(isinstance(s, Real) and not isinstance(s, bool) for s in scores)
            ):
                message = f"{whose}: must be a list of {len(nbest)} numbers (one per hypothesis)"
                raise where.error(f"{at}.custom['{SCORES_KEY}']", message)
            meta[SCORES_KEY] = [float(s) for s in scores]
        if custom:
            meta["custom"] = {
                key: json_value(value, f"{at}.custom['{key}']", where)
                for key, value in custom.items()
            }
        return CorrectionRecord(
            id=sup.id if id_from == "supervision" else f"{cut.id}-{index}",
            task=task,
            dataset=dataset,
            hypotheses=nbest,
            reference=sup.text,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            meta=meta,
        )

    def id_field(row: tuple[Any, int, Any]) -> str:
        return f"supervisions[{row[1]}].id" if id_from == "supervision" else "id"

    rows = _supervision_rows(CutSet.from_file(path), path, unit, report)
    return emit_records(
        rows,
        convert,
        path=path,
        unit=unit,
        report=report,
        skip_invalid=skip_invalid,
        id_field=id_field,
    )


def _supervision_rows(cuts: Any, path: str, unit: str, report: ImportReport) -> Iterator[Row]:
    """``(cut position, (cut, supervision index, supervision))`` for every supervision."""
    iterator = iter(cuts)
    pos = 0
    while True:
        pos += 1
        try:
            cut = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # lhotse raises many kinds for a bad manifest line
            message = f"lhotse could not read cut {pos}: {type(err).__name__}: {err}"
            raise RecordError(path, pos, None, message, unit=unit) from err
        supervisions = getattr(cut, "supervisions", None)
        if supervisions is None:
            message = f"expected a lhotse cut, got {type(cut).__name__}"
            yield pos, RecordError(path, pos, None, message, unit=unit)
            continue
        if not supervisions:
            report.skip(NO_SUPERVISIONS)
            continue
        for index, sup in enumerate(supervisions):
            yield pos, (cut, index, sup)
