"""Data pipeline speed and density: render + tokenise + pack the HyPoradise sample.

Measures, on the vendored training sample (seven domains, ~13.7k records) with a byte-level BPE
tokenizer trained on it:

* tokens/s of rendering prompts, tokenising and planning the packing (median over repeats,
  no cache), and of materialising packed sequences (``PackedMixture[i]``);
* packing efficiency (share of non-padding tokens) at ``--seq-length`` (target >= 97 % at 2048);
* with ``--train-steps N``: the tiny NeKo model's training tokens/s on the same packed batches
  in the same run, and the ratio data/training (target >= 10: data never bounds training).

Run::

    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --seq-length 2048 --train-steps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="also time this many tiny-model training steps (needs the training package)",
    )
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from nemo_neko.data.mixture import DatasetSpec, MixtureConfig, PackedMixture
    from nemo_neko.data.records import read_records
    from nemo_neko.data.sample_data import DOMAINS, sample_paths
    from nemo_neko.data.tokenizer import train_bpe_tokenizer
    from nemo_neko.tasks import get_task

    paths = [str(p) for p in sample_paths("train")]
    records = read_records(paths)
    tokenizer = train_bpe_tokenizer(
        [get_task(r.task).prompt(r) + "\n" + r.reference for r in records], vocab_size=args.vocab
    )
    config = MixtureConfig(
        datasets=[DatasetSpec(d, [p]) for d, p in zip(DOMAINS, paths)],
        epochs=1,
        seq_length=args.seq_length,
    )

    build_seconds, mixture = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        mixture = PackedMixture.build(config, tokenizer)  # read + render + tokenise + plan
        build_seconds.append(time.perf_counter() - start)
    tokens = sum(int(d.lengths.sum()) for d in mixture.datasets)
    start = time.perf_counter()
    for i in range(len(mixture)):
        mixture[i]
    materialise = time.perf_counter() - start
    build = statistics.median(build_seconds)
    figures = {
        "records": len(records),
        "sample_tokens": tokens,
        "sequences": len(mixture),
        "seq_length": args.seq_length,
        "efficiency": round(mixture.efficiency(), 4),
        "build_seconds_median": round(build, 3),
        "build_tokens_per_s": round(tokens / build),
        "materialise_tokens_per_s": round(tokens / materialise),
        "pipeline_tokens_per_s": round(tokens / (build + materialise)),
    }
    print(
        f"{len(records)} records, {tokens} sample tokens -> {len(mixture)} sequences of {args.seq_length}"
    )
    print(f"  packing efficiency           {100 * figures['efficiency']:.2f} % (target >= 97 %)")
    print(
        f"  render+tokenise+plan         {figures['build_tokens_per_s']:,} tokens/s (median of {args.repeats})"
    )
    print(f"  materialise packed batches   {figures['materialise_tokens_per_s']:,} tokens/s")
    print(f"  whole pipeline               {figures['pipeline_tokens_per_s']:,} tokens/s")
    if args.train_steps:
        from benchmarks.train_throughput import tiny_training_tokens_per_s

        train = tiny_training_tokens_per_s(mixture, tokenizer, steps=args.train_steps)
        figures["train_tokens_per_s"] = round(train)
        figures["ratio_data_over_train"] = round(figures["pipeline_tokens_per_s"] / train, 1)
        print(f"  tiny model training          {figures['train_tokens_per_s']:,} tokens/s")
        print(f"  ratio data / training        {figures['ratio_data_over_train']} (target >= 10)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return figures


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
