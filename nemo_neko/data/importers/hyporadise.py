"""HyPoradise N-best JSON -> ``asr`` records.

HyPoradise (Chen et al., NeurIPS 2023; dataset ``PeacefulData/HyPoradise-v0``, MIT licence)
ships one JSON array per (domain, split). Each item:

==============  ==================================================================
``input``       N-best ASR hypotheses, best first (list of strings) -> ``hypotheses``
``output``      reference transcript -> ``reference``
``am_score``    optional acoustic-model scores, one per hypothesis -> ``meta.am_score``
``id``          optional utterance id -> ``id`` (else ``<dataset>-<item index>``)
``input1``      some releases: the 1-best re-punctuated (derived from ``input``; not imported)
``input2``      some releases: the other hypotheses joined (derived; not imported)
``instruction`` some releases: a prompt text (the task owns the prompt; not imported)
==============  ==================================================================

Any other key is an error, as is a missing ``input``/``output`` or an empty N-best list; errors
name the file, the item (1-based) and the field. ``meta.origin`` keeps ``<file>#<index>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nemo_neko.data.importers._common import (
    ImportReport,
    Where,
    check_object,
    emit_records,
    read_rows,
)
from nemo_neko.data.records import CorrectionRecord

DERIVED_FIELDS = ("input1", "input2", "instruction")
"""Fields some HyPoradise releases add that are renderings of ``input`` or prompts."""

KNOWN_FIELDS = ("id", "input", "output", "am_score", *DERIVED_FIELDS)


def import_hyporadise(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    task: str = "asr",
    id_prefix: str | None = None,
) -> Iterator[CorrectionRecord]:
    """Yield one record per item of a HyPoradise JSON file.

    Args:
        path: the JSON array file.
        dataset: dataset name for the records (e.g. ``"atis"``).
        report: receives counts and (with ``skip_invalid``) the rejected items.
        skip_invalid: collect invalid items in ``report`` instead of raising.
        task: task of the records (``"asr"``).
        id_prefix: prefix of generated ids (default ``dataset``) for items without ``id``:
            ``<prefix>-<0-based item index, 6 digits>``.

    Raises:
        RecordError: an invalid item (unless ``skip_invalid``), naming file, item and field.
    """
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected items")
    report = report if report is not None else ImportReport()
    prefix = id_prefix or dataset
    origin = Path(path).name

    def convert(item: Any, where: Where) -> CorrectionRecord:
        item = check_object(
            item, where, fmt="HyPoradise", required=("input", "output"), known=KNOWN_FIELDS
        )
        index = where.pos - 1
        hypotheses = item["input"]
        if not isinstance(hypotheses, list) or not all(isinstance(h, str) for h in hypotheses):
            raise where.error("input", "must be a list of strings")
        if not hypotheses:
            raise where.error("input", "empty hypothesis list")
        if not isinstance(item["output"], str):
            raise where.error("output", "must be a string")
        meta: dict[str, Any] = {"origin": f"{origin}#{index}"}
        if "am_score" in item:
            scores = item["am_score"]
            if not isinstance(scores, list) or len(scores) != len(hypotheses):
                raise where.error("am_score", f"must be a list of {len(hypotheses)} numbers")
            meta["am_score"] = scores
        record_id = item.get("id")
        if record_id is not None and (not isinstance(record_id, str) or not record_id):
            raise where.error("id", f"must be a non-empty string, got {record_id!r}")
        return CorrectionRecord(
            id=record_id or f"{prefix}-{index:06d}",
            task=task,
            dataset=dataset,
            hypotheses=hypotheses,
            reference=item["output"],
            meta=meta,
        )

    unit, rows = read_rows(path)
    if unit != "item":
        raise ValueError(
            f"{path}: HyPoradise files are JSON arrays (.json), not {unit}-based files"
        )
    return emit_records(
        rows, convert, path=path, unit=unit, report=report, skip_invalid=skip_invalid
    )
