"""Shared plumbing of the importers: the import report, row readers and the checked record loop.

Every importer turns one published file into :class:`~nemo_neko.data.records.CorrectionRecord`
objects through :func:`emit_records`, which

* validates each record exactly as :func:`~nemo_neko.data.records.validate_record` does when the
  JSONL file is read back (so an importer cannot write a file the reader rejects),
* rejects duplicate ids, naming the input field the id came from and where it was first seen,
* counts what it produced in an :class:`ImportReport`, and
* with ``skip_invalid=True`` collects rejected rows in the report instead of raising.

Positions are 1-based and named by their unit: ``line`` (JSONL, lhotse manifests), ``item``
(JSON arrays, torch pickles) or ``row`` (parquet).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_neko.data.records import CorrectionRecord, RecordError, validate_record
from nemo_neko.utils.jsonl import DAMAGED, iter_json_lines, open_binary

PARQUET_HINT = "reading parquet needs pyarrow: pip install pyarrow (or convert the file to JSONL)"


@dataclass
class ImportReport:
    """What one import produced, skipped, rejected and truncated.

    Attributes:
        records: records yielded.
        skipped: rows deliberately left out, by reason (e.g. ``"'paraphrase' records (not a NeKo
            task)"`` -> count). Only importers that document a skip rule add here.
        rejected: invalid rows collected with ``skip_invalid=True`` (otherwise they raise).
        truncated: records whose field was shortened, by record field (``source``, ``reference``).
        ignored_fields: input fields dropped because the caller named them in ``ignore_fields``.
        warnings: things a user should look at (e.g. unknown fields kept in ``meta``), by
            message -> rows concerned.
        notes: documented handling worth knowing (fields not imported, kept verbatim), by
            message -> rows concerned.
        unit: what the input's positions count (``line``, ``item``, ``row``), for the summary.
    """

    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: list[RecordError] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)
    ignored_fields: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    unit: str = "row"

    @property
    def num_rejected(self) -> int:
        """Number of rejected rows."""
        return len(self.rejected)

    @property
    def num_skipped(self) -> int:
        """Number of rows skipped by a documented rule, all reasons together."""
        return sum(self.skipped.values())

    def skip(self, reason: str) -> None:
        """Count one row left out for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def warn(self, message: str) -> None:
        """Count one row concerned by warning ``message``."""
        self.warnings[message] = self.warnings.get(message, 0) + 1

    def note(self, message: str) -> None:
        """Count one row concerned by note ``message``."""
        self.notes[message] = self.notes.get(message, 0) + 1

    def summary(self) -> str:
        """Human-readable lines for a CLI, e.g. ``skipped 3 'paraphrase' records (not a NeKo task)``."""
        lines = [f"{self.records} records imported, {self.num_rejected} rejected"]
        lines += [f"skipped {count} {reason}" for reason, count in sorted(self.skipped.items())]
        lines += [
            f"truncated '{name}' in {count} records"
            for name, count in sorted(self.truncated.items())
        ]
        lines += [
            f"ignored field '{name}' in {count} rows"
            for name, count in sorted(self.ignored_fields.items())
        ]
        for kind, counts in (("warning", self.warnings), ("note", self.notes)):
            lines += [
                f"{kind}: {message} ({count} {self.unit}{'s' if count != 1 else ''})"
                for message, count in sorted(counts.items())
            ]
        lines += [f"rejected {err}" for err in self.rejected]
        return "\n".join(lines)


@dataclass(frozen=True)
class Where:
    """A position in an input file, to build :class:`RecordError` objects from."""

    path: str
    pos: int
    unit: str = "line"

    def error(self, field_name: str | None, message: str) -> RecordError:
        """A :class:`RecordError` at this position."""
        return RecordError(self.path, self.pos, field_name, message, unit=self.unit)


Row = tuple[int, Any]
"""``(position, parsed value)``; the value is a :class:`RecordError` when the row did not parse."""


def read_rows(path: str | os.PathLike) -> tuple[str, Iterator[Row]]:
    """Open a ``.jsonl``/``.jsonl.gz``, ``.json`` (one array) or ``.parquet`` table.

    Returns:
        ``(unit, rows)``: the position unit (``line``, ``item`` or ``row``) and the rows.

    Raises:
        RecordError: a ``.json`` file that is not one JSON array.
        ImportError: a parquet file without pyarrow installed (with the install hint).
        ValueError: any other file type.
    """
    path = str(path)
    name = Path(path).name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "line", _jsonl_rows(path)
    if name.endswith((".json", ".json.gz")):
        return "item", _json_array_rows(path)
    if name.endswith(".parquet"):
        return "row", _parquet_rows(path)
    raise ValueError(
        f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .json or .parquet)"
    )


LFS_POINTER = b"version https://git-lfs.github.com/spec/"
"""How a Git LFS pointer file starts (a dataset cloned without ``git lfs pull``)."""


def check_not_placeholder(path: str, head: bytes) -> None:
    """Raise when a file's first bytes show it holds no data: empty, or a Git LFS pointer."""
    if not head.strip():
        raise RecordError(path, 1, None, "the file is empty (no items to import)")
    if head.startswith(LFS_POINTER):
        raise RecordError(
            path,
            1,
            None,
            "the file is a Git LFS pointer, not the data: fetch it with `git lfs pull` "
            "(or download the file itself from the dataset's hub page)",
        )


def _jsonl_rows(path: str) -> Iterator[Row]:
    with open_binary(path) as fh:
        try:
            head = fh.read(len(LFS_POINTER))
        except DAMAGED:
            head = b"?"  # the line reader below names the damage
    if head.startswith(LFS_POINTER):
        check_not_placeholder(path, head)
    for item in iter_json_lines(path):
        if item.fatal:  # nothing after this point can be read: never skippable
            raise RecordError(path, item.line, None, item.error)
        if item.error is not None:
            yield item.line, RecordError(path, item.line, None, item.error)
        else:
            yield item.line, item.value


def _read_bytes(path: str) -> bytes:
    """All (decompressed) bytes of ``path``; a truncated or damaged ``.gz`` names its line."""
    chunks: list[bytes] = []
    with open_binary(path) as fh:
        try:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                chunks.append(chunk)
        except DAMAGED as err:
            lines = sum(c.count(b"\n") for c in chunks)
            raise RecordError(
                path,
                lines + 1,
                None,
                f"the file ends early or is damaged after line {lines} "
                f"({type(err).__name__}: {err})",
            ) from None
    return b"".join(chunks)


def _json_array_rows(path: str) -> Iterator[Row]:
    raw = _read_bytes(path)
    check_not_placeholder(path, raw[: len(LFS_POINTER)])
    # bytes that are not UTF-8 are kept as lone surrogates, so only the items holding them fail
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        message = f"malformed JSON ({err.msg} at column {err.colno})"
        raise RecordError(path, err.lineno, None, message) from None
    if not isinstance(items, list):
        raise RecordError(
            path, 1, None, f"expected a JSON array of items, got {type(items).__name__}"
        )
    for index, item in enumerate(items, start=1):
        bad = _undecodable(item)
        if bad is None:
            yield index, item
        else:
            field_name, byte = bad
            message = f"not UTF-8 text (byte 0x{byte:02x})"
            yield index, RecordError(path, index, field_name, message, unit="item")


def _undecodable(value: Any, name: str | None = None) -> tuple[str | None, int] | None:
    """``(top-level field, byte)`` of the first byte in ``value`` that was not UTF-8."""
    if isinstance(value, str):
        for char in value:
            if "\udc80" <= char <= "\udcff":
                return name, ord(char) - 0xDC00
        return None
    if isinstance(value, dict):
        pairs = value.items()
    elif isinstance(value, list):
        pairs = ((None, v) for v in value)
    else:
        return None
    for key, inner in pairs:
        found = _undecodable(key, name) if isinstance(key, str) else None
        found = found or _undecodable(inner, name if name is not None else key)
        if found:
            return found
    return None


def _parquet_rows(path: str) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"{path}: {PARQUET_HINT}") from err
    pos = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            pos += 1
            yield pos, row


def check_object(
    row: Any, where: Where, *, fmt: str, required: Iterable[str], known: Iterable[str]
) -> dict[str, Any]:
    """``row`` as a dict with every ``required`` key and no key outside ``known``."""
    if not isinstance(row, dict):
        raise where.error(None, f"expected an object, got {type(row).__name__}")
    known = tuple(known)
    unknown = sorted(set(row) - set(known))
    if unknown:
        raise where.error(unknown[0], f"unknown {fmt} field (known: {', '.join(known)})")
    for name in required:
        if name not in row:
            raise where.error(name, "missing required field")
    return row


def get_str(row: dict[str, Any], name: str, where: Where, *, allow_empty: bool = False) -> str:
    """``row[name]`` as a string; an error if absent, not a string, or (unless allowed) blank."""
    if name not in row:
        raise where.error(name, "missing required field")
    value = row[name]
    if not isinstance(value, str):
        raise where.error(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise where.error(name, "must not be empty")
    return value


def json_value(value: Any, name: str, where: Where) -> Any:
    """``value`` made JSON-safe for ``meta`` (dates become ISO strings); an error otherwise."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise where.error(name, f"cannot be stored in meta ({type(value).__name__})") from None
    return value


def emit_records(
    rows: Iterable[Row],
    convert: Callable[[Any, Where], CorrectionRecord | None],
    *,
    path: str,
    unit: str,
    report: ImportReport,
    skip_invalid: bool,
    id_field: str | Callable[[Any], str] = "id",
) -> Iterator[CorrectionRecord]:
    """Convert rows to checked records (see the module docstring).

    Args:
        rows: ``(position, value)`` pairs; a :class:`RecordError` value is a row that did not parse.
        convert: one row to a record, or None when the importer skipped it (and counted why).
        path: input file, for messages.
        unit: what positions count (``line``, ``item``, ``row``).
        report: receives counts and, with ``skip_invalid``, the rejected rows.
        skip_invalid: collect invalid rows in ``report`` instead of raising.
        id_field: the input field record ids come from (or a function of the row giving it), named
            in duplicate-id errors.
    """
    first_seen: dict[str, int] = {}
    report.unit = unit
    for pos, row in rows:
        where = Where(path, pos, unit)
        try:
            if isinstance(row, RecordError):
                raise row
            record = convert(row, where)
            if record is None:
                continue
            check_record(record, where)
            if record.id in first_seen:
                name = id_field(row) if callable(id_field) else id_field
                message = (
                    f"duplicate id {record.id!r} (first seen at {unit} {first_seen[record.id]})"
                )
                raise where.error(name, message)
        except RecordError as err:
            if not skip_invalid:
                raise
            report.rejected.append(err)
            continue
        first_seen[record.id] = pos
        report.records += 1
        yield record


def check_record(record: CorrectionRecord, where: Where) -> None:
    """Validate ``record`` as its JSONL line will be validated on read; errors keep ``where``."""
    try:
        validate_record(json.loads(record.to_json()), where.path, where.pos)
    except RecordError as err:
        raise where.error(err.field, err.message) from None


def default_prefix(dataset: str, path: str | os.PathLike) -> str:
    """Generated-id prefix ``<dataset>-<file stem>``: unique across the files of one dataset."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".pt"):
        name = name.removesuffix(suffix)
    return f"{dataset}-{name}"
