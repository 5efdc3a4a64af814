"""PleIAs Post-OCR-Correction -> ``ocr`` records.

Post-OCR-Correction (Pleias, 2024; dataset ``PleIAs/Post-OCR-Correction``, CC0-1.0) pairs
cultural-heritage OCR text with an LLM-made correction: French (Gallica newspapers), English
(Chronicling America newspapers: the NeKo paper's OCR data), Italian and German (monographs).
Sources read: the dataset card (README.md: description, configs ``french`` = ``gallica_*.parquet``,
``english`` = ``nbu_*.parquet`` + ``ny_*.parquet``, ``italian_*.parquet``, ``german_*.parquet``)
and public training recipes that read the columns ``text`` and ``corrected_text``. The NeKo
paper's protocol keeps the first 1,000 characters of both.

=================== =============================================================================
``text``            OCR output -> ``source`` (first ``max_chars`` characters)
``corrected_text``  corrected text -> ``reference`` (first ``max_chars`` characters)
``language``        if present (a string) -> ``meta.language``; or pass ``language=`` (e.g. the
                    config name's language, ``"en"``); both given must agree
other columns       not documented by the card (the release carries per-document metadata whose
                    exact names we could not confirm): copied to ``meta.columns`` as they are
                    (dates as ISO strings), so nothing is dropped unseen
=================== =============================================================================

**File type.** The release is parquet: read with pyarrow when installed (otherwise an
``ImportError`` with the install hint). The same rows as JSON lines (``.jsonl``/``.jsonl.gz``) or
a JSON array (``.json``) are read without extra dependencies.

**Truncation.** ``max_chars=1000`` (default, the paper's protocol) cuts both texts to their first
1,000 characters (``None`` keeps them whole). Every record then carries ``meta.truncation =
{"max_chars", "source_chars", "reference_chars", "source_truncated", "reference_truncated"}``
(original lengths), and the report counts truncated ``source``/``reference`` fields.

A missing or empty ``text``/``corrected_text`` is an error naming file, line/item/row and field.
Ids are ``<id_prefix>-<row index>`` (default prefix ``<dataset>-<file stem>``), or
``<id_prefix>-<value>`` of ``id_field`` when a column is named as the id (duplicates are then an
error). ``meta.origin`` keeps ``<file>#<index>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nemo_neko.data.importers._common import (
    ImportReport,
    Where,
    default_prefix,
    emit_records,
    get_str,
    json_value,
    read_rows,
)
from nemo_neko.data.records import CorrectionRecord

OCR_FIELD = "text"
CORRECTED_FIELD = "corrected_text"
LANGUAGE_FIELD = "language"
DEFAULT_MAX_CHARS = 1000


def import_pleias_ocr(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    language: str | None = None,
    id_field: str | None = None,
    id_prefix: str | None = None,
) -> Iterator[CorrectionRecord]:
    """Yield one ``ocr`` record per row of a Post-OCR-Correction file.

    Args:
        path: a release ``.parquet`` file (needs pyarrow), or the rows as ``.jsonl``/``.json``.
        dataset: dataset name of the records (e.g. ``"pleias_en"``).
        report: receives counts, truncations and (with ``skip_invalid``) the rejected rows.
        skip_invalid: collect invalid rows in ``report`` instead of raising.
        max_chars: keep the first ``max_chars`` characters of both texts (None: whole texts).
        language: language of the file (e.g. ``"en"``) for ``meta.language``.
        id_field: a column holding a unique id for the record ids (default: row index).
        id_prefix: prefix of the ids (default ``<dataset>-<file stem>``).

    Raises:
        RecordError: an invalid row (unless ``skip_invalid``).
        ImportError: a parquet file without pyarrow.
    """
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected rows")
    if max_chars is not None and (isinstance(max_chars, bool) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    report = report if report is not None else ImportReport()
    prefix = id_prefix or default_prefix(dataset, path)
    origin = Path(path).name

    def convert(row: Any, where: Where) -> CorrectionRecord:
        if not isinstance(row, dict):
            raise where.error(None, f"expected an object, got {type(row).__name__}")
        ocr_text = get_str(row, OCR_FIELD, where)
        corrected = get_str(row, CORRECTED_FIELD, where)
        meta: dict[str, Any] = {"origin": f"{origin}#{where.pos - 1}"}
        lang = _language(row, language, where)
        if lang:
            meta["language"] = lang
        if max_chars is not None:
            truncation = {
                "max_chars": max_chars,
                "source_chars": len(ocr_text),
                "reference_chars": len(corrected),
                "source_truncated": len(ocr_text) > max_chars,
                "reference_truncated": len(corrected) > max_chars,
            }
            meta["truncation"] = truncation
            ocr_text, corrected = ocr_text[:max_chars], corrected[:max_chars]
            if not ocr_text.strip():
                raise where.error(OCR_FIELD, f"blank in its first {max_chars} characters")
        if id_field is None:
            record_id = f"{prefix}-{where.pos - 1:06d}"
        else:
            value = row.get(id_field)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
                raise where.error(
                    id_field, f"id column must hold a string or integer, got {value!r}"
                )
            record_id = f"{prefix}-{value}"
        columns = {
            name: json_value(value, name, where)
            for name, value in row.items()
            if name not in (OCR_FIELD, CORRECTED_FIELD, LANGUAGE_FIELD)
        }
        if columns:
            meta["columns"] = columns
        return CorrectionRecord(
            id=record_id,
            task="ocr",
            dataset=dataset,
            source=ocr_text,
            reference=corrected,
            meta=meta,
        )

    unit, rows = read_rows(path)
    records = emit_records(
        rows,
        convert,
        path=path,
        unit=unit,
        report=report,
        skip_invalid=skip_invalid,
        id_field=id_field or "id",
    )
    return _count_truncations(records, report)


def _count_truncations(
    records: Iterator[CorrectionRecord], report: ImportReport
) -> Iterator[CorrectionRecord]:
    for record in records:
        truncation = record.meta.get("truncation", {})
        for name in ("source", "reference"):
            if truncation.get(f"{name}_truncated"):
                report.truncated[name] = report.truncated.get(name, 0) + 1
        yield record


def _language(row: dict[str, Any], given: str | None, where: Where) -> str | None:
    value = row.get(LANGUAGE_FIELD)
    if value is None:
        return given
    if not isinstance(value, str) or not value.strip():
        raise where.error(LANGUAGE_FIELD, f"must be a non-empty string, got {value!r}")
    if given and value != given:
        raise where.error(LANGUAGE_FIELD, f"{value!r} contradicts language={given!r}")
    return value
