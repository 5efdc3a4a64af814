"""HyPoradise N-best JSON -> ``asr`` records.

HyPoradise (Chen et al., NeurIPS 2023; dataset ``PeacefulData/HyPoradise-v0``, MIT licence)
ships one JSON array per (domain, split); every item holds a 5-best list (``input``, best first)
and its reference (``output``). The release stores its sets in four key layouts (read from the
files of every domain):

=================================================  =======================================
keys of every item                                 files
=================================================  =======================================
``id``, ``input``, ``output``, ``am_score``        ``train_atis``, ``test_atis``
``input``, ``output``, ``input1``, ``input2``      ``chime4``, ``coraal``, ``cv``, ``lrs2``,
                                                   ``swbd``, ``td3``, ``wsj``
``instruction``, ``input``, ``output``             ``test_ls_clean``, ``test_ls_other``
``input``, ``output``, ``score``                   ``test_wsj_score`` (``train_wsj_score``)
=================================================  =======================================

Fields:

===============  ===================================================================
``input``        N-best hypotheses, best first (list of strings) -> ``hypotheses``; the
                 literal ``"<UNK>"`` (the release's empty hypothesis) and empty strings
                 are kept as published (counted in a note)
``output``       reference transcript -> ``reference``
``am_score``     acoustic-model scores, one number per hypothesis -> ``meta.am_score``
``score``        the same scores under the name of ``*_wsj_score`` -> ``meta.am_score``
                 (an item with both is an error)
``id``           utterance id -> ``id`` (else ``<dataset>-<file stem>-<item index>``)
``input1``       ``input[0] + "."``: not imported when it is that rendering (compared
                 ignoring case: the release writes ``<UNK>`` as ``<unk>`` there)
``input2``       ``"".join(h + ". " for h in input[1:])``: as ``input1``
``instruction``  a prompt text (the task renders its own prompt): not imported
===============  ===================================================================

Any other key is kept in ``meta.extra`` and counted as a warning in the report; an
``input1``/``input2`` that is not the rendering of ``input`` is kept there too. A missing
``input``/``output``, an empty N-best list or scores of the wrong length are errors naming the
file, the item (1-based) and the field. ``meta.origin`` keeps ``<file>#<0-based index>``.

The release's CSV files (``test_chime4.csv``: columns ``source``, ``target``, ``best_hypo``,
and ``score`` in ``test_wsj_score.csv``) join the N-best list into one text (in ``test_wsj.csv``
without any separator), so the hypotheses cannot be recovered from them: they are refused with
the columns named; import the ``.json`` of the same set instead.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nemo_neko.data.importers._common import (
    ImportReport,
    Where,
    default_prefix,
    emit_records,
    json_value,
    read_rows,
)
from nemo_neko.data.records import CorrectionRecord
from nemo_neko.utils.jsonl import DAMAGED, open_text

SCORE_FIELDS = ("am_score", "score")
"""The names the release gives its acoustic scores (both go to ``meta.am_score``)."""

RENDERINGS = {
    "input1": lambda hypotheses: hypotheses[0] + ".",
    "input2": lambda hypotheses: "".join(h + ". " for h in hypotheses[1:]),
}
"""Fields some HyPoradise files add that are renderings of ``input``."""

PROMPT_FIELDS = ("instruction",)
"""Fields holding a prompt text (the task owns the prompt)."""

KNOWN_FIELDS = ("id", "input", "output", *SCORE_FIELDS, *RENDERINGS, *PROMPT_FIELDS)

UNK = "<UNK>"
"""The release's empty hypothesis."""


def import_hyporadise(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    task: str = "asr",
    id_prefix: str | None = None,
) -> Iterator[CorrectionRecord]:
    """Yield one record per item of a HyPoradise JSON file (any of the release's layouts).

    Args:
        path: the JSON array file (``.json`` or ``.json.gz``).
        dataset: dataset name for the records (e.g. ``"atis"``).
        report: receives counts, warnings, notes and (with ``skip_invalid``) the rejected items.
        skip_invalid: collect invalid items in ``report`` instead of raising.
        task: task of the records (``"asr"``).
        id_prefix: prefix of generated ids for items without ``id`` (default
            ``<dataset>-<file stem>``): ``<prefix>-<0-based item index, 6 digits>``.

    Raises:
        RecordError: an invalid item (unless ``skip_invalid``), naming file, item and field.
        ValueError: a CSV file of the release (naming its columns) or another file type.
    """
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected items")
    report = report if report is not None else ImportReport()
    prefix = id_prefix or default_prefix(dataset, path)
    origin = Path(path).name

    def convert(item: Any, where: Where) -> CorrectionRecord:
        if not isinstance(item, dict):
            raise where.error(None, f"expected an object, got {type(item).__name__}")
        for name in ("input", "output"):
            if name not in item:
                raise where.error(name, "missing required field")
        index = where.pos - 1
        hypotheses = item["input"]
        if not isinstance(hypotheses, list) or not all(isinstance(h, str) for h in hypotheses):
            raise where.error("input", "must be a list of strings")
        if not hypotheses:
            raise where.error("input", "empty hypothesis list")
        if not isinstance(item["output"], str):
            raise where.error("output", "must be a string")
        record_id = item.get("id")
        if record_id is not None and (not isinstance(record_id, str) or not record_id):
            raise where.error("id", f"must be a non-empty string, got {record_id!r}")
        meta: dict[str, Any] = {"origin": f"{origin}#{index}"}
        scores = [name for name in SCORE_FIELDS if name in item]
        if len(scores) > 1:
            raise where.error("score", "both 'am_score' and 'score' given (one list of scores)")
        for name in scores:
            values = item[name]
            if (
                not isinstance(values, list)
                or len(values) != len(hypotheses)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            ):
                raise where.error(name, f"must be a list of {len(hypotheses)} numbers")
            meta["am_score"] = values
        extra = _extras(item, hypotheses, where, report)
        if extra:
            meta["extra"] = extra
        if any(h == UNK for h in hypotheses):
            report.note(f"the literal hypothesis {UNK!r} (the release's empty one) kept as is")
        for name in PROMPT_FIELDS:
            if name in item:
                report.note(f"{name!r} not imported (the task renders its own prompt)")
        return CorrectionRecord(
            id=record_id or f"{prefix}-{index:06d}",
            task=task,
            dataset=dataset,
            hypotheses=hypotheses,
            reference=item["output"],
            meta=meta,
        )

    if path.lower().endswith((".csv", ".csv.gz")):
        raise ValueError(csv_refusal(path))
    unit, rows = read_rows(path)
    if unit != "item":
        raise ValueError(
            f"{path}: HyPoradise files are JSON arrays (.json), not {unit}-based files"
        )
    return emit_records(
        rows, convert, path=path, unit=unit, report=report, skip_invalid=skip_invalid
    )


def _extras(item: dict, hypotheses: list[str], where: Where, report: ImportReport) -> dict:
    """Fields kept in ``meta.extra``: unknown keys, and renderings that are not of ``input``."""
    extra = {}
    for name, render in RENDERINGS.items():
        if name not in item:
            continue
        value = item[name]
        if isinstance(value, str) and value.lower() == render(hypotheses).lower():
            report.note(f"{name!r} not imported (a rendering of 'input')")
        else:
            extra[name] = json_value(value, name, where)
            report.warn(f"{name!r} is not the rendering of 'input': kept in meta.extra")
    for name in item:
        if name not in KNOWN_FIELDS:
            extra[name] = json_value(item[name], name, where)
            report.warn(f"unknown HyPoradise field {name!r} kept in meta.extra")
    return extra


def csv_refusal(path: str) -> str:
    """Why a HyPoradise CSV cannot be imported, with its columns (or why they are unreadable)."""
    try:
        with open_text(path) as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, *DAMAGED) as err:
        header = [f"<unreadable: {err}>"]
    columns = ", ".join(header) or "<none>"
    return (
        f"{path}: a CSV file (columns {columns}): the release's CSV joins the N-best list into "
        f"one 'source' text that cannot be split back into hypotheses; import the .json file of "
        f"the same set instead"
    )
