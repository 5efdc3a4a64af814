"""Where predictions came from, so a rerun resumes only its own work and never mixes models.

Every line ``correct`` writes says what produced it::

    {"id": "td3-000012", "prediction": "...", "record": "3f1c9a0b22de",
     "source": {"checkpoint": "step_00000120", "step": 120, "fingerprint": "9ab0c1d2e3f40516",
                "generate": {"decoding": "greedy", "max_new_tokens": 256,
                             "new_tokens_per_input_token": 2.0, "seq_length": 2048}}}

``source`` names the checkpoint (its folder, step and :func:`fingerprint
<nemo_neko.model.checkpoint_files.fingerprint>`) and the settings that shape the output;
``record`` is a digest of the record the prediction answers. :func:`resume` keeps an existing
file only when every line has this run's source and a record of this set unchanged; otherwise
the file (with the records beside it) is moved aside under a name saying where it came from
(``predictions.step_00000120-9ab0c1d2.jsonl``; predictions made through a server,
:mod:`nemo_neko.inference.openai_engine`, ``predictions.openai-<served model>.jsonl``), and
correction starts a new one. Nothing is
deleted, and one file never holds the work of two models or two settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from nemo_neko.paths import CHECKPOINT_PREFIX, records_beside, routing_beside

log = logging.getLogger(__name__)


def prediction_source(checkpoint: Path, run) -> dict:
    """The ``source`` of predictions made with ``checkpoint`` under ``run``'s settings."""
    from nemo_neko.model.checkpoint_files import fingerprint

    name = checkpoint.name
    step = int(name[len(CHECKPOINT_PREFIX) :]) if name.startswith(CHECKPOINT_PREFIX) else None
    generate = run.generate
    return {
        "checkpoint": name,
        "step": step,
        "fingerprint": fingerprint(checkpoint),
        "generate": {
            "decoding": "greedy",
            "max_new_tokens": generate.max_new_tokens,
            "new_tokens_per_input_token": generate.new_tokens_per_input_token,
            "extra_new_tokens": generate.extra_new_tokens,
            "no_repeat_ngram_size": generate.no_repeat_ngram_size,
            "seq_length": run.data.seq_length,
        },
    }


def describe_source(source: dict | None) -> str:
    """``step_00000120 (fingerprint 9ab0c1d2..., max_new_tokens 256, ...)`` for messages."""
    if not source:
        return "an unrecorded checkpoint and settings"
    settings = ", ".join(f"{k} {v}" for k, v in source.get("generate", {}).items())
    if source.get("engine") == "openai":
        return f"{source.get('served_model')} served at {source.get('base_url')} ({settings})"
    return f"{source.get('checkpoint')} (fingerprint {source.get('fingerprint')}; {settings})"


def record_digest(record) -> str:
    """A short digest of a record's JSON line: a prediction is stale once its record changes."""
    return hashlib.sha256(record.to_json().encode("utf-8")).hexdigest()[:12]


def read_lines(path: Path) -> list[dict]:
    """The lines of a predictions file; a torn last line (killed run) is cut off the file."""
    if not path.exists():
        return []
    items, good_bytes = [], 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                item = json.loads(raw)
                if not raw.endswith(b"\n") or not isinstance(item, dict) or "id" not in item:
                    raise ValueError("torn line")
            except ValueError:
                break
            items.append(item)
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: dropping a torn last line left by an interrupted run", path)
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return items


def done_ids(path: Path) -> set[str]:
    """Ids already in a predictions file (a torn last line is cut off)."""
    return {item["id"] for item in read_lines(path)}


def _aside_name(out: Path, source: dict | None) -> Path:
    if source and source.get("engine") == "openai":
        served = re.sub(r"[^A-Za-z0-9._-]+", "_", str(source.get("served_model"))).strip("_.")
        tag = f"openai-{served[-40:] or 'model'}"
    elif source and source.get("checkpoint"):
        tag = f"{source['checkpoint']}-{str(source.get('fingerprint', ''))[:8]}"
    else:
        tag = "unrecorded"
    candidate, n = out.with_name(f"{out.stem}.{tag}{out.suffix}"), 2
    while candidate.exists() or records_beside(candidate).exists():
        candidate, n = out.with_name(f"{out.stem}.{tag}-{n}{out.suffix}"), n + 1
    return candidate


def resume(out: Path, source: dict, digests: dict[str, str]) -> set[str]:
    """Ids of ``out`` to keep (made by ``source`` for records of ``digests``, unchanged).

    Any other file is moved aside (see the module docstring) and the empty set returned.

    Args:
        out: the predictions file.
        source: this run's :func:`prediction_source`.
        digests: ``{record id: record_digest(record)}`` of the records to correct.
    """
    lines = read_lines(out)
    if not lines:
        return set()
    stale = next(
        (
            item
            for item in lines
            if item.get("source") != source or digests.get(item["id"]) != item.get("record")
        ),
        None,
    )
    if stale is None:
        return {item["id"] for item in lines}
    if stale.get("source") != source:
        why = f"were made by {describe_source(stale.get('source'))}"
    elif stale["id"] not in digests:
        why = f"answer records that are not in this set (e.g. {stale['id']!r})"
    else:
        why = f"answer records that have changed since (e.g. {stale['id']!r})"
    aside = _aside_name(out, stale.get("source"))
    os.replace(out, aside)
    for beside in (records_beside, routing_beside):  # the routing summary goes with them
        if beside(out).exists():
            os.replace(beside(out), beside(aside))
    print(
        f"{out}: its {len(lines)} predictions {why}, not by {describe_source(source)}: "
        f"moved to {aside}; correcting afresh",
        flush=True,
    )
    return set()
