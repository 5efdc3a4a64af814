"""Helpers for the evaluation tests: JSONL writers for manifests, records and predictions."""

import json


def write_jsonl(path, rows):
    """Write dicts (or raw strings, written as they are) one per line; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def manifest_rows(pairs, duration=None, time=None):
    """Leaderboard rows from (reference, prediction) pairs."""
    return [
        {"audio_filepath": f"s{i}", "duration": duration, "time": time, "text": r, "pred_text": p}
        for i, (r, p) in enumerate(pairs)
    ]
