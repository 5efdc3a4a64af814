"""JSONL files: read line by line with every fault named, written atomically and reproducibly.

Reading (:func:`iter_json_lines`) yields one :class:`JsonLine` per non-blank line, with the
1-based line number and either the parsed value or why the line could not be read: not UTF-8
(the byte and its column), malformed JSON (the parser's message and column), or the file ending
early (a truncated or damaged ``.gz``: nothing after that point can be read). Callers decide
whether a bad line stops them or is counted and skipped; nothing is skipped here.

Writing (:func:`write_jsonl`) goes to a temporary name beside the target and is renamed over it
only when complete (a killed or failed writer leaves neither a half-written file under the final
name nor the temporary file); ``.gz`` files are compressed without a name or timestamp in their
header, so the same lines give the same bytes.

Files may be plain (``.jsonl``) or gzip-compressed (``.jsonl.gz``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)
"""What a truncated or corrupted gzip stream raises while it is read."""


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file.

    Attributes:
        line: 1-based line number.
        value: the parsed JSON value (None when ``error`` is set).
        error: why the line could not be read, or None.
        fatal: the file cannot be read past this line (it ends early or is damaged).
    """

    line: int
    value: Any = None
    error: str | None = None
    fatal: bool = False


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open a plain or ``.gz`` file for reading bytes."""
    path = str(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def open_text(path: str | os.PathLike, mode: str = "rt") -> io.TextIOBase:
    """Open a plain or ``.gz`` text file (UTF-8)."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        column = len(raw[: err.start].decode("utf-8", errors="replace")) + 1
        return None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column})"


def iter_json_lines(path: str | os.PathLike) -> Iterator[JsonLine]:
    """Yield every non-blank line of ``path`` as a :class:`JsonLine` (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
    """
    line_no = 0
    with open_binary(path) as fh:
        try:
            for line_no, raw in enumerate(fh, start=1):  # noqa: B007 (line_no used after)
                if not raw.strip():
                    continue
                text, problem = _decode(raw)
                if problem is not None:
                    yield JsonLine(line_no, error=problem)
                    continue
                try:
                    yield JsonLine(line_no, value=json.loads(text))
                except json.JSONDecodeError as err:
                    yield JsonLine(
                        line_no, error=f"malformed JSON ({err.msg} at column {err.colno})"
                    )
        except DAMAGED as err:
            yield JsonLine(
                line_no + 1,
                error=f"the file ends early or is damaged after line {line_no} "
                f"({type(err).__name__}: {err})",
                fatal=True,
            )


def write_jsonl(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write ``lines`` (one JSON document each, no newline) atomically; returns how many.

    The parent folder is created. On any failure (also a failing ``lines`` iterator) the
    temporary file is removed, so are the folders this call created, and the target is left as
    it was.
    """
    path = Path(path)
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    count = 0
    done = False
    try:
        with open(tmp, "wb") as raw:
            binary = (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
                if path.name.endswith(".gz")
                else raw
            )
            with io.TextIOWrapper(binary, encoding="utf-8", newline="\n") as fh:
                for line in lines:
                    fh.write(line + "\n")
                    count += 1
        os.replace(tmp, path)
        done = True
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            for folder in created:  # innermost first; only the ones left empty
                try:
                    folder.rmdir()
                except OSError:
                    break
    return count
