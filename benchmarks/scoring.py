"""Leaderboard scoring speed: utterances per second for each protocol, leaderboard-sized input.

Builds about 100k (reference, prediction) pairs from the shipped HyPoradise sample (every
hypothesis of every record paired with its reference, cycled until ``--pairs``), varied the way
raw leaderboard text varies (sentence case and final period on references, upper-cased or
comma-separated predictions, "ignore time segment in scoring" every 1000th reference), writes
them as eight leaderboard manifests ``MODEL_bench-model_DATASET_sample-<domain>_test.jsonl`` with
durations and times, and times ``score_sources`` (read, normalise, count, composite) end to end
for each protocol. Prints the median over ``--repeats`` of the total seconds and utterances/s
(target: the whole set in under a minute per protocol).

Run::

    python benchmarks/scoring.py                      # 100k pairs, 3 repeats, both protocols
    python benchmarks/scoring.py --pairs 20000 --repeats 1
    python benchmarks/scoring.py --json scoring.json  # also write the figures
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

PROTOCOLS = ("esb2024", "oal2026")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000, help="utterances in total")
    parser.add_argument(
        "--datasets", type=int, default=8, help="manifest files to spread them over"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--json", default=None, help="write the figures to this file")
    return parser.parse_args(argv)


def _vary(i: int, reference: str, prediction: str) -> tuple[str, str]:
    """Make normalised sample text look like raw leaderboard text, deterministically."""
    if i % 1000 == 999:
        return "ignore_time_segment_in_scoring", prediction
    if i % 2:
        reference = reference[:1].upper() + reference[1:] + "."
    if i % 3 == 1:
        prediction = prediction.upper()
    elif i % 3 == 2:
        prediction = prediction.replace(" ", ", ", 1)
    return reference, prediction


def build_pairs(count: int) -> list[tuple[str, str]]:
    """``count`` (reference, prediction) pairs from the HyPoradise sample (train + test)."""
    from nemo_neko.data.records import read_records
    from nemo_neko.data.sample_data import sample_paths

    base = [
        (record.reference, hypothesis)
        for split in ("train", "test")
        for record in read_records(sample_paths(split))
        for hypothesis in record.hypotheses
    ]
    return [_vary(i, *base[i % len(base)]) for i in range(count)]


def write_manifests(pairs: list[tuple[str, str]], folder: str, datasets: int) -> list[str]:
    """Leaderboard-named manifests, pairs spread round-robin; returns the paths."""
    paths = [
        os.path.join(folder, f"MODEL_bench-model_DATASET_sample-set{d}_test.jsonl")
        for d in range(datasets)
    ]
    handles = [open(p, "w", encoding="utf-8") for p in paths]
    try:
        for i, (reference, prediction) in enumerate(pairs):
            row = {
                "audio_filepath": f"sample_{i}",
                "duration": 2.0 + (i % 17) * 0.5,
                "time": 0.01 + (i % 5) * 0.002,
                "text": reference,
                "pred_text": prediction,
            }
            handles[i % datasets].write(json.dumps(row) + "\n")
    finally:
        for handle in handles:
            handle.close()
    return paths


def main(argv=None) -> dict:
    args = parse_args(argv)
    from nemo_neko.eval.manifests import expand_inputs
    from nemo_neko.eval.scoring import score_sources

    pairs = build_pairs(args.pairs)
    figures: dict = {
        "pairs": len(pairs),
        "datasets": args.datasets,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "protocols": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        sources = expand_inputs(write_manifests(pairs, folder, args.datasets))
        for protocol in args.protocols:
            seconds, result = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = score_sources(sources, protocol)
                seconds.append(time.perf_counter() - start)
            median = statistics.median(seconds)
            scored = sum(d.utterances for d in result.datasets)
            figures["protocols"][protocol] = {
                "seconds_median": round(median, 3),
                "seconds_all": [round(s, 3) for s in seconds],
                "utterances_scored": scored,
                "utterances_per_second": round(len(pairs) / median, 1),
                "composite_wer": result.composites[0].wer,
            }
            print(
                f"{protocol}: {len(pairs)} utterances ({scored} scored) in {median:.2f} s "
                f"(median of {args.repeats}) = {len(pairs) / median:,.0f} utterances/s, "
                f"composite WER {result.composites[0].wer:.2f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
