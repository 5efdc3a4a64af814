"""Correction records: one JSONL schema for every task, validated on read.

A record is one line of JSON::

    {"id": "atis-000017", "task": "asr", "dataset": "atis",
     "hypotheses": ["list all flights", "list all flight", ...],   # N-best, best first
     "reference": "list all flights", "meta": {"am_score": [...]}}

Fields:

=============  ========  =================================================================
field          required  meaning
=============  ========  =================================================================
``id``         yes       unique within a file (non-empty string)
``task``       yes       a registered task (:mod:`nemo_neko.tasks`): asr, st, mt, ocr, ...
``dataset``    yes       dataset name (the unit that gets its own expert)
``reference``  yes       the correct output (string; may be empty for unlabelled data)
``hypotheses`` per task  N-best list, best first (asr/st/mt): non-empty list of strings
``source``     per task  input text (ocr/tec): non-empty string
``src_lang``   per task  source language code (st/mt)
``tgt_lang``   per task  target language code (st/mt)
``meta``       no        free-form object (scores, provenance, ...)
=============  ========  =================================================================

Bad input is never skipped silently: every problem raises :class:`RecordError` naming the
file, line and field. With ``skip_invalid=True`` the reader instead collects the rejected lines
(malformed JSON, bytes that are not UTF-8, schema errors) in :class:`ReadReport` (count and
reasons), so the caller can report them; a file that ends early or is damaged (a truncated
``.gz``) always raises, since nothing after that point can be read.

Files may be plain (``.jsonl``) or gzip-compressed (``.jsonl.gz``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_neko.utils.jsonl import iter_json_lines, write_jsonl

__all__ = [
    "CorrectionRecord",
    "ReadReport",
    "RecordError",
    "iter_records",
    "read_records",
    "validate_record",
    "write_records",
]

RECORD_FIELDS = (
    "id",
    "task",
    "dataset",
    "hypotheses",
    "source",
    "reference",
    "src_lang",
    "tgt_lang",
    "meta",
)
REQUIRED_FIELDS = ("id", "task", "dataset", "reference")


class RecordError(ValueError):
    """A record that breaks the schema; ``path``, ``line`` (1-based) and ``field`` say where.

    ``unit`` names what ``line`` counts: ``"line"`` for JSONL, ``"item"`` for JSON arrays.
    """

    def __init__(self, path: str, line: int, field: str | None, message: str, unit: str = "line"):
        self.path, self.line, self.field, self.unit = str(path), line, field, unit
        where = f"{path}:{line}" if unit == "line" else f"{path}:{unit} {line}"
        self.message = message
        super().__init__(f"{where}: field '{field}': {message}" if field else f"{where}: {message}")


@dataclass
class CorrectionRecord:
    """One correction example (see the module docstring for the fields)."""

    id: str
    task: str
    dataset: str
    reference: str
    hypotheses: list[str] | None = None
    source: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSONL line (no trailing newline); unset optional fields are left out."""
        data = {
            k: v for k, v in asdict(self).items() if v is not None and not (k == "meta" and not v)
        }
        return json.dumps(data, ensure_ascii=False)


@dataclass
class ReadReport:
    """What a lenient read (``skip_invalid=True``) rejected, line by line."""

    records: int = 0
    rejected: list[RecordError] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        return len(self.rejected)

    def summary(self) -> str:
        lines = [f"{self.records} records read, {self.num_rejected} rejected"]
        lines += [f"  rejected {err}" for err in self.rejected]
        return "\n".join(lines)


def validate_record(data: Any, path: str, line: int) -> CorrectionRecord:
    """Check one parsed JSON value against the schema and its task's needs."""
    from nemo_neko.tasks import get_task, known_tasks

    if not isinstance(data, dict):
        raise RecordError(path, line, None, f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(RECORD_FIELDS))
    if unknown:
        raise RecordError(
            path,
            line,
            unknown[0],
            f"unknown field (known: {', '.join(RECORD_FIELDS)}; put extras in 'meta')",
        )
    for name in REQUIRED_FIELDS:
        if name not in data:
            raise RecordError(path, line, name, "missing required field")
    for name in ("id", "task", "dataset"):
        if not isinstance(data[name], str) or not data[name].strip():
            raise RecordError(path, line, name, f"must be a non-empty string, got {data[name]!r}")
    if not isinstance(data["reference"], str):
        raise RecordError(
            path, line, "reference", f"must be a string, got {type(data['reference']).__name__}"
        )
    if data["task"] not in known_tasks():
        raise RecordError(
            path,
            line,
            "task",
            f"unknown task {data['task']!r} (known tasks: {', '.join(known_tasks())})",
        )
    hypotheses = data.get("hypotheses")
    if hypotheses is not None:
        if not isinstance(hypotheses, list):
            raise RecordError(
                path,
                line,
                "hypotheses",
                f"must be a list of strings, got {type(hypotheses).__name__}",
            )
        for i, hyp in enumerate(hypotheses):
            if not isinstance(hyp, str):
                raise RecordError(
                    path, line, "hypotheses", f"item {i} must be a string, got {hyp!r}"
                )
    for name in ("source", "src_lang", "tgt_lang"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise RecordError(
                path, line, name, f"must be a string, got {type(data[name]).__name__}"
            )
    if "meta" in data and not isinstance(data["meta"], dict):
        raise RecordError(
            path, line, "meta", f"must be a JSON object, got {type(data['meta']).__name__}"
        )
    record = CorrectionRecord(
        **{k: data[k] for k in RECORD_FIELDS if k in data and data[k] is not None}
    )
    problem = get_task(record.task).check_record(record)
    if problem is not None:
        field_name, message = problem
        raise RecordError(path, line, field_name, message)
    return record


def iter_records(
    path: str | os.PathLike, *, skip_invalid: bool = False, report: ReadReport | None = None
) -> Iterator[CorrectionRecord]:
    """Yield the records of one JSONL file, validating each line and checking ids are unique.

    Args:
        path: ``.jsonl`` or ``.jsonl.gz`` file.
        skip_invalid: collect invalid lines in ``report`` instead of raising.
        report: receives counts and rejected lines (required when ``skip_invalid``).

    Raises:
        RecordError: the first invalid line (unless ``skip_invalid``); a damaged or truncated
            file (always).
        FileNotFoundError: no such file.
    """
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs a ReadReport to receive the rejected lines")
    path = str(path)
    first_line_of: dict[str, int] = {}
    for item in iter_json_lines(path):
        if item.fatal:  # the rest of the file is unreadable: nothing to skip to
            raise RecordError(path, item.line, None, item.error + "; nothing after it can be read")
        try:
            if item.error is not None:
                raise RecordError(path, item.line, None, item.error)
            record = validate_record(item.value, path, item.line)
            if record.id in first_line_of:
                raise RecordError(
                    path,
                    item.line,
                    "id",
                    f"duplicate id {record.id!r} (first seen on line {first_line_of[record.id]})",
                )
        except RecordError as err:
            if not skip_invalid:
                raise
            report.rejected.append(err)
            continue
        first_line_of[record.id] = item.line
        if report is not None:
            report.records += 1
        yield record


def read_records(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    skip_invalid: bool = False,
    report: ReadReport | None = None,
) -> list[CorrectionRecord]:
    """All records of one or more files (ids must be unique within each file)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[CorrectionRecord] = []
    for path in paths:
        records.extend(iter_records(path, skip_invalid=skip_invalid, report=report))
    return records


def write_records(path: str | os.PathLike, records: Iterable[CorrectionRecord]) -> int:
    """Write records as JSONL (gzip when the name ends in ``.gz``), atomically and byte-
    reproducibly (:func:`nemo_neko.utils.jsonl.write_jsonl`). Returns the count."""
    return write_jsonl(path, (record.to_json() for record in records))
