"""Importers: published correction datasets -> :class:`~nemo_neko.data.records.CorrectionRecord`.

One registry, one call signature::

    report = ImportReport()
    records = import_records("coedit", "train.jsonl", dataset="coedit", report=report)
    write_records("coedit.jsonl", records)
    print(report.summary())  # e.g. "skipped 1234 'paraphrase' records (not a NeKo task)"

=================  ======================================  ====================================
format             published data                          record task
=================  ======================================  ====================================
``hyporadise``     HyPoradise N-best JSON arrays           ``asr``
``hypotranslate``  HypoTranslate (GenTranslate) ``.pt``    ``st`` / ``mt``
``coedit``         CoEdIT ``train.jsonl`` (``_id``, ...)   ``tec_grammar`` / ``tec_coherence``
``pleias_ocr``     PleIAs Post-OCR-Correction parquet      ``ocr``
``lhotse``         lhotse CutSet with ``custom["nbest"]``  ``asr``
=================  ======================================  ====================================

Every importer is called as ``importer(path, *, dataset, report=None, skip_invalid=False,
**options)`` and returns an iterator of records that pass
:func:`~nemo_neko.data.records.validate_record`, with ids unique within the file. Bad input
raises :class:`~nemo_neko.data.records.RecordError` naming file, line/item/row and field; with
``skip_invalid=True`` the rejected rows are collected in the :class:`ImportReport` instead.
Importing this package imports neither torch nor lhotse nor pyarrow: the importers that need
them import them when called. See README.md in this folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from nemo_neko.data.importers._common import ImportReport
from nemo_neko.data.importers.coedit import import_coedit
from nemo_neko.data.importers.hyporadise import import_hyporadise
from nemo_neko.data.importers.hypotranslate import import_hypotranslate
from nemo_neko.data.importers.lhotse_cuts import import_lhotse_cuts
from nemo_neko.data.importers.pleias_ocr import import_pleias_ocr
from nemo_neko.data.records import CorrectionRecord

Importer = Callable[..., Iterator[CorrectionRecord]]
"""``(path, *, dataset, report=None, skip_invalid=False, **options) -> Iterator[CorrectionRecord]``."""


IMPORTERS: dict[str, Importer] = {
    "hyporadise": import_hyporadise,
    "hypotranslate": import_hypotranslate,
    "coedit": import_coedit,
    "pleias_ocr": import_pleias_ocr,
    "lhotse": import_lhotse_cuts,
}
"""Format name -> importer (uniform signature, see the module docstring)."""


def known_formats() -> list[str]:
    """Registered format names, sorted."""
    return sorted(IMPORTERS)


def import_records(
    fmt: str,
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    **options: Any,
) -> Iterator[CorrectionRecord]:
    """Records of one published file.

    Args:
        fmt: a format name (see :func:`known_formats`).
        path: the input file.
        dataset: dataset name of the records.
        report: receives counts, skips, truncations and rejected rows.
        skip_invalid: collect invalid rows in ``report`` (required then) instead of raising.
        **options: the importer's own options (e.g. ``max_chars`` for ``pleias_ocr``).

    Raises:
        ValueError: unknown format, or ``skip_invalid`` without a report.
        RecordError: the first invalid row (unless ``skip_invalid``).
    """
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown import format {fmt!r} (known: {', '.join(known_formats())})")
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected rows")
    return IMPORTERS[fmt](
        path, dataset=dataset, report=report, skip_invalid=skip_invalid, **options
    )


__all__ = [
    "IMPORTERS",
    "ImportReport",
    "Importer",
    "import_coedit",
    "import_hyporadise",
    "import_hypotranslate",
    "import_lhotse_cuts",
    "import_pleias_ocr",
    "import_records",
    "known_formats",
]
