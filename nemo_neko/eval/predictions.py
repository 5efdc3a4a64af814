"""Model outputs for the correction report: JSONL ``{"id": ..., "prediction": ...}``, joined by id.

Every record must have exactly one prediction and every prediction a record. Missing or extra
ids raise :class:`PredictionMismatchError` listing them; ``missing_as_empty=True`` scores missing
ones as empty output instead (the report then says how many). Extra ids are always an error:
they mean the predictions belong to other records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from nemo_neko.eval.inputs import InputError, iter_json_objects, require_string

SHOWN_IDS = 20
"""How many ids an error message lists before "... and N more"."""


class PredictionMismatchError(ValueError):
    """Predictions and records do not cover the same ids."""

    def __init__(self, missing: Sequence[str], extra: Sequence[str]):
        self.missing, self.extra = list(missing), list(extra)
        parts = []
        if self.missing:
            parts.append(
                f"{len(self.missing)} record id(s) have no prediction: {_listing(self.missing)} "
                "(--missing-as-empty scores them as empty output)"
            )
        if self.extra:
            parts.append(
                f"{len(self.extra)} prediction id(s) match no record: {_listing(self.extra)}"
            )
        super().__init__("; ".join(parts))


def _listing(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN_IDS])
    return shown + (f" ... and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def read_predictions(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, sources: list | None = None
) -> dict[str, str]:
    """``{id: prediction}`` from one or more JSONL files.

    Lines written by ``python -m nemo_neko.eval correct`` carry a ``source`` (checkpoint and
    generation settings); all lines must then have the same one: one report scores one model.

    Args:
        paths: the prediction files.
        sources: when given, receives the ``source`` of the predictions (None for files
            without one), once.

    Raises:
        InputError: malformed JSON, a missing or non-string ``id``/``prediction``, an id seen
            twice (in any of the files), or predictions of two different sources.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    predictions: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    first_source: tuple[str, object] | None = None
    for path in paths:
        path = str(path)
        for line, data in iter_json_objects(path):
            source = data.get("source")
            if first_source is None:
                first_source = (f"{path}:{line}", source)
            elif source != first_source[1]:
                raise InputError(
                    path,
                    line,
                    "source",
                    f"made by {_source_text(source)}, unlike {first_source[0]} "
                    f"({_source_text(first_source[1])}); score the predictions of one "
                    f"checkpoint and one set of settings at a time",
                )
            pred_id = require_string(path, line, data, "id")
            if not pred_id:
                raise InputError(path, line, "id", "must be a non-empty string")
            text = require_string(path, line, data, "prediction", ' (use "" for empty output)')
            if pred_id in predictions:
                raise InputError(
                    path,
                    line,
                    "id",
                    f"duplicate id {pred_id!r} (first seen at {first_seen[pred_id]})",
                )
            predictions[pred_id] = text
            first_seen[pred_id] = f"{path}:{line}"
    if sources is not None and first_source is not None:
        sources.append(first_source[1])
    return predictions


def _source_text(source) -> str:
    if not isinstance(source, dict):
        return "an unrecorded checkpoint" if source is None else repr(source)[:80]
    return f"{source.get('checkpoint')} (fingerprint {source.get('fingerprint')})"


def join_predictions(
    record_ids: Sequence[str], predictions: dict[str, str], *, missing_as_empty: bool = False
) -> tuple[list[str], list[str]]:
    """Outputs in record order, and the ids that had no prediction (scored as ``""``).

    Raises:
        ValueError: the same record id twice (predictions cannot be joined unambiguously).
        PredictionMismatchError: extra ids, or missing ids without ``missing_as_empty``.
    """
    seen: set[str] = set()
    repeated = []
    for rid in record_ids:
        if rid in seen:
            repeated.append(rid)
        seen.add(rid)
    if repeated:
        raise ValueError(
            f"record id(s) appear more than once across the record files, so predictions cannot "
            f"be joined by id: {_listing(sorted(set(repeated)))}"
        )
    missing = [rid for rid in record_ids if rid not in predictions]
    extra = sorted(set(predictions) - seen)
    if extra or (missing and not missing_as_empty):
        raise PredictionMismatchError(missing if not missing_as_empty else [], extra)
    return [predictions.get(rid, "") for rid in record_ids], missing
