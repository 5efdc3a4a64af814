"""CoEdIT (instruction-tuned text editing) -> ``tec_grammar`` / ``tec_coherence`` records.

CoEdIT (Raheja et al., "CoEdIT: Text Editing by Task-Specific Instruction Tuning", Findings of
EMNLP 2023; dataset ``grammarly/coedit``, Apache-2.0). Sources read: the dataset card
(``huggingface.co/datasets/grammarly/coedit``, README.md: "The dataset is in JSON format", the
data instance and the field list) and its file listing (``train.jsonl``, ``validation.jsonl``;
the Hub's parquet conversion carries the same four string columns). The card's example shows
``'_id': 1`` (a number) while the release's schema types ``_id`` as a string: both are accepted.

=========  ====================================================================================
``_id``    instance id -> ``meta.coedit_id``; record id ``<id_prefix>-<_id>`` (duplicates are an
           error)
``task``   edit task -> record task: ``gec`` -> ``tec_grammar``, ``coherence`` ->
           ``tec_coherence``; the other CoEdIT tasks are counted and skipped (see below)
``src``    ``"<instruction>: <text>"``, split at the first ``": "``: the instruction goes to
           ``meta.instruction`` (the TEC task owns its own prompt), the text becomes ``source``;
           a ``src`` without ``": "`` is an error
``tgt``    the edited text -> ``reference``
=========  ====================================================================================

Other CoEdIT tasks (``clarity``, ``paraphrase``, ``neutralize``, ``simplification``; the paper's
``formality`` is not in the public release for licensing reasons, per the card) are not NeKo
tasks: each skipped row is counted in :attr:`ImportReport.skipped` under
``"'<task>' records (not a NeKo task)"``, never dropped unreported; ``strict_tasks=True`` makes
them errors instead. A task outside this list is an error listing the known ones. Any other key,
a missing key or a non-string value is an error naming the file, line (JSONL), item (JSON array)
or row (parquet) and the field. ``meta.origin`` keeps ``<file>#<position>``.
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
    default_prefix,
    emit_records,
    get_str,
    read_rows,
)
from nemo_neko.data.records import CorrectionRecord

TASK_MAP = {"gec": "tec_grammar", "coherence": "tec_coherence"}
"""CoEdIT task -> NeKo task."""

OTHER_TASKS = ("clarity", "formality", "neutralize", "paraphrase", "simplification")
"""CoEdIT tasks that are not NeKo tasks (counted and skipped, or errors with ``strict_tasks``)."""

KNOWN_TASKS = tuple(sorted((*TASK_MAP, *OTHER_TASKS)))
FIELDS = ("_id", "task", "src", "tgt")
SEPARATOR = ": "


def skip_reason(coedit_task: str) -> str:
    """The :attr:`ImportReport.skipped` key for rows of a non-NeKo CoEdIT task."""
    return f"{coedit_task!r} records (not a NeKo task)"


def import_coedit(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    strict_tasks: bool = False,
    id_prefix: str | None = None,
) -> Iterator[CorrectionRecord]:
    """Yield one TEC record per ``gec``/``coherence`` row of a CoEdIT file.

    Args:
        path: ``train.jsonl``/``validation.jsonl`` (also ``.jsonl.gz``, a ``.json`` array, or the
            Hub's ``.parquet`` conversion with pyarrow installed).
        dataset: dataset name of the records (e.g. ``"coedit"``).
        report: receives counts, the skipped non-NeKo tasks and (with ``skip_invalid``) the
            rejected rows; pass one to see what was skipped.
        skip_invalid: collect invalid rows in ``report`` instead of raising.
        strict_tasks: make rows of non-NeKo CoEdIT tasks errors instead of counted skips.
        id_prefix: record ids are ``<id_prefix>-<_id>`` (default ``<dataset>-<file stem>``).

    Raises:
        RecordError: an invalid row (unless ``skip_invalid``).
    """
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected rows")
    report = report if report is not None else ImportReport()
    prefix = id_prefix or default_prefix(dataset, path)
    origin = Path(path).name

    def convert(row: Any, where: Where) -> CorrectionRecord | None:
        row = check_object(row, where, fmt="CoEdIT", required=FIELDS, known=FIELDS)
        coedit_id = row["_id"]
        if isinstance(coedit_id, bool) or not isinstance(coedit_id, (str, int)):
            raise where.error("_id", f"must be a string or an integer, got {coedit_id!r}")
        coedit_id = str(coedit_id)
        if not coedit_id.strip():
            raise where.error("_id", "must not be empty")
        coedit_task = get_str(row, "task", where)
        if coedit_task not in KNOWN_TASKS:
            known = ", ".join(KNOWN_TASKS)
            raise where.error("task", f"unknown CoEdIT task {coedit_task!r} (known: {known})")
        if coedit_task not in TASK_MAP:
            if strict_tasks:
                message = f"CoEdIT task {coedit_task!r} is not a NeKo task (strict_tasks=True)"
                raise where.error("task", message)
            report.skip(skip_reason(coedit_task))
            return None
        src = get_str(row, "src", where)
        instruction, sep, text = src.partition(SEPARATOR)
        if not sep:
            raise where.error("src", f"no {SEPARATOR!r} between instruction and text: {src[:60]!r}")
        if not instruction.strip():
            raise where.error("src", "empty instruction before ': '")
        if not text.strip():
            raise where.error("src", "empty text after the instruction")
        return CorrectionRecord(
            id=f"{prefix}-{coedit_id}",
            task=TASK_MAP[coedit_task],
            dataset=dataset,
            source=text,
            reference=get_str(row, "tgt", where),
            meta={
                "instruction": instruction,
                "coedit_task": coedit_task,
                "coedit_id": coedit_id,
                "origin": f"{origin}#{where.pos}",
            },
        )

    unit, rows = read_rows(path)
    return emit_records(
        rows,
        convert,
        path=path,
        unit=unit,
        report=report,
        skip_invalid=skip_invalid,
        id_field="_id",
    )
