"""Reading the evaluator's JSONL inputs: one error type naming file, line and field.

Leaderboard manifests (:mod:`nemo_neko.eval.manifests`) and prediction files
(:mod:`nemo_neko.eval.predictions`) are read line by line through :func:`iter_json_objects`;
anything wrong raises :class:`InputError` (a :class:`~nemo_neko.data.records.RecordError`, so
``path:line: field 'x': problem``), never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from nemo_neko.data.records import RecordError
from nemo_neko.utils.jsonl import iter_json_lines


class InputError(RecordError):
    """A bad line in an evaluation input file; ``path``, ``line`` and ``field`` say where."""


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a ``.jsonl`` (or ``.gz``) file.

    Raises:
        InputError: a line that is not UTF-8, malformed JSON, not a JSON object, or a file that
            ends early (truncated ``.gz``).
        FileNotFoundError: no such file.
    """
    path = str(path)
    for item in iter_json_lines(path):
        if item.error is not None:
            raise InputError(path, item.line, None, item.error)
        if not isinstance(item.value, dict):
            raise InputError(
                path, item.line, None, f"expected a JSON object, got {item.value!r:.40}"
            )
        yield item.line, item.value


def require_string(path: str, line: int, data: dict, field: str, hint: str = "") -> str:
    """``data[field]`` when it is a string; :class:`InputError` otherwise."""
    if field not in data:
        raise InputError(path, line, field, "missing required field" + hint)
    value = data[field]
    if not isinstance(value, str):
        raise InputError(path, line, field, f"must be a string, got {value!r:.40}" + hint)
    return value
