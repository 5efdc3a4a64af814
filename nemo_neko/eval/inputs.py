"""Reading the evaluator's JSONL inputs: one error type naming file, line and field.

Leaderboard manifests (:mod:`nemo_neko.eval.manifests`) and prediction files
(:mod:`nemo_neko.eval.predictions`) are read line by line through :func:`iter_json_objects`;
anything wrong raises :class:`InputError` (a :class:`~nemo_neko.data.records.RecordError`, so
``path:line: field 'x': problem``), never a silent skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from nemo_neko.data.records import RecordError, open_text


class InputError(RecordError):
    """A bad line in an evaluation input file; ``path``, ``line`` and ``field`` say where."""


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a ``.jsonl`` (or ``.gz``) file.

    Raises:
        InputError: malformed JSON, or a line that is not a JSON object.
        FileNotFoundError: no such file.
    """
    path = str(path)
    with open_text(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as err:
                raise InputError(
                    path, line_no, None, f"malformed JSON ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(data, dict):
                raise InputError(path, line_no, None, f"expected a JSON object, got {data!r:.40}")
            yield line_no, data


def require_string(path: str, line: int, data: dict, field: str, hint: str = "") -> str:
    """``data[field]`` when it is a string; :class:`InputError` otherwise."""
    if field not in data:
        raise InputError(path, line, field, "missing required field" + hint)
    value = data[field]
    if not isinstance(value, str):
        raise InputError(path, line, field, f"must be a string, got {value!r:.40}" + hint)
    return value
