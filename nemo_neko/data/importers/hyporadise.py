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

import json
import os
from collections.abc import Iterator
from pathlib import Path

from nemo_neko.data.records import CorrectionRecord, RecordError

DERIVED_FIELDS = ("input1", "input2", "instruction")
"""Fields some HyPoradise releases add that are renderings of ``input`` or prompts."""

KNOWN_FIELDS = ("id", "input", "output", "am_score", *DERIVED_FIELDS)


def import_hyporadise(
    path: str | os.PathLike, dataset: str, *, task: str = "asr", id_prefix: str | None = None
) -> Iterator[CorrectionRecord]:
    """Yield one record per item of a HyPoradise JSON file.

    Args:
        path: the JSON array file.
        dataset: dataset name for the records (e.g. ``"atis"``).
        task: task of the records (``"asr"``).
        id_prefix: prefix of generated ids (default ``dataset``) for items without ``id``.
    """
    path = str(path)
    with open(path, encoding="utf-8") as fh:
        try:
            items = json.load(fh)
        except json.JSONDecodeError as err:
            raise RecordError(path, err.lineno, None, f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(items, list):
        raise RecordError(path, 1, None, f"expected a JSON array of items, got {type(items).__name__}")
    prefix = id_prefix or dataset
    origin = Path(path).name
    for index, item in enumerate(items):
        where = dict(path=path, line=index + 1, unit="item")
        if not isinstance(item, dict):
            raise RecordError(field=None, message=f"expected an object, got {type(item).__name__}", **where)
        unknown = sorted(set(item) - set(KNOWN_FIELDS))
        if unknown:
            raise RecordError(field=unknown[0], message=f"unknown HyPoradise field (known: {', '.join(KNOWN_FIELDS)})", **where)
        for name in ("input", "output"):
            if name not in item:
                raise RecordError(field=name, message="missing required field", **where)
        hypotheses = item["input"]
        if not isinstance(hypotheses, list) or not all(isinstance(h, str) for h in hypotheses):
            raise RecordError(field="input", message="must be a list of strings", **where)
        if not hypotheses:
            raise RecordError(field="input", message="empty hypothesis list", **where)
        if not isinstance(item["output"], str):
            raise RecordError(field="output", message="must be a string", **where)
        meta = {"origin": f"{origin}#{index}"}
        if "am_score" in item:
            scores = item["am_score"]
            if not isinstance(scores, list) or len(scores) != len(hypotheses):
                raise RecordError(field="am_score", message=f"must be a list of {len(hypotheses)} numbers", **where)
            meta["am_score"] = scores
        record_id = item.get("id")
        if record_id is not None and (not isinstance(record_id, str) or not record_id):
            raise RecordError(field="id", message=f"must be a non-empty string, got {record_id!r}", **where)
        yield CorrectionRecord(
            id=record_id or f"{prefix}-{index:06d}",
            task=task,
            dataset=dataset,
            hypotheses=hypotheses,
            reference=item["output"],
            meta=meta,
        )
