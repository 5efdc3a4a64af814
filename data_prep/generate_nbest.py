"""N-best lists for a lhotse cut manifest: cuts with custom["nbest"] + asr correction records.

Canary 5-best by temperature sampling (the paper), one shard of 64 (one GPU)::

    python data_prep/generate_nbest.py run manifests/librispeech_cuts_train-clean-100.jsonl.gz \
        --out-dir nbest --name librispeech_train-clean-100 --dataset librispeech \
        --backend canary --model nvidia/canary-1b-flash --method sample --temperature 0.3 \
        --n 5 --batch-size 64 --shard 3/64

Beam search instead: ``--method beam`` (``--beam-size 5``); the leaderboard's 1-best baseline:
``--method first_pass``. In a Slurm array job ``--shard slurm`` reads SLURM_ARRAY_TASK_ID and
SLURM_ARRAY_TASK_COUNT (template: data_prep/slurm/generate_nbest.sbatch). Then, once::

    python data_prep/generate_nbest.py merge --out-dir nbest --name librispeech_train-clean-100 \
        --dataset librispeech --shards 64

CPU, nothing downloaded (PocketSphinx's bundled English model; a tiny random Canary comes from
data_prep/make_tiny_canary.py)::

    python data_prep/generate_nbest.py run cuts.jsonl.gz --out-dir out --name demo \
        --dataset demo --backend pocketsphinx --duplicates unique_pad --batch-size 4

A killed run restarted with the same arguments resumes at the first unfinished batch; a
finished one is skipped. Backend options without a flag: ``--option key=value`` (JSON value).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from nemo_neko.data.cli import key_value_option

CANARY_FLAGS = ("model", "method", "temperature", "beam_size", "pnc", "device", "dtype")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate N-best lists for one shard of a manifest")
    run.add_argument("cuts", help="input cut manifest (one supervision per cut)")
    run.add_argument("--out-dir", required=True)
    run.add_argument("--name", required=True, help="output file stem")
    run.add_argument("--dataset", required=True, help="dataset name of the records")
    run.add_argument("--backend", default="canary", help="canary or pocketsphinx")
    run.add_argument("--n", type=int, default=5, help="hypotheses per utterance")
    run.add_argument("--duplicates", default="keep", help="keep or unique_pad")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--max-batch-seconds", type=float, default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--shard", default="0/1", help="i/N, or 'slurm' (array task id/count)")
    canary = run.add_argument_group("canary backend")
    canary.add_argument("--model", help=".nemo file or pretrained name (nvidia/canary-1b-flash)")
    canary.add_argument("--method", help="beam, sample or first_pass")
    canary.add_argument("--temperature", type=float, help="sampling temperature (paper: 0.3)")
    canary.add_argument("--beam-size", type=int, help="beam width (default n)")
    canary.add_argument("--pnc", help="punctuation and capitals: yes or no (default no)")
    canary.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    canary.add_argument("--dtype", help="auto (bf16 on GPU), bfloat16, float16, float32")
    run.add_argument(
        "--option",
        action="append",
        type=key_value_option,
        default=[],
        metavar="KEY=VALUE",
        help="further backend option (JSON value)",
    )
    run.add_argument("--progress-interval", type=float, default=30.0)

    merge = sub.add_parser("merge", help="join finished shard outputs into one manifest + records")
    merge.add_argument("--out-dir", required=True)
    merge.add_argument("--name", required=True)
    merge.add_argument("--dataset", required=True)
    merge.add_argument("--shards", type=int, required=True)
    return parser


def _shard(text: str):
    from nemo_neko.asr.sharding import Shard

    if text != "slurm":
        return Shard.parse(text)
    try:
        return Shard(
            int(os.environ["SLURM_ARRAY_TASK_ID"]), int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        )
    except KeyError as err:
        raise SystemExit(
            f"--shard slurm: {err.args[0]} is not set (not a Slurm array task?)"
        ) from None


def run(args) -> int:
    from nemo_neko.asr.generate import GenerateConfig, generate_nbest

    options = dict(args.option)
    for flag in CANARY_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            if args.backend != "canary":
                raise SystemExit(
                    f"--{flag.replace('_', '-')} is a canary option (backend: {args.backend})"
                )
            options[flag] = value
    config = GenerateConfig(
        cuts=args.cuts,
        out_dir=args.out_dir,
        name=args.name,
        dataset=args.dataset,
        backend=args.backend,
        backend_options=options,
        n=args.n,
        duplicates=args.duplicates,
        batch_size=args.batch_size,
        max_batch_seconds=args.max_batch_seconds,
        seed=args.seed,
        shard=_shard(args.shard),
        progress_interval=args.progress_interval,
    )
    report = generate_nbest(config)
    summary = {
        "cuts": str(report.cuts_path),
        "records": str(report.records_path),
        "utterances": report.utterances,
        "resumed": report.resumed,
        "skipped": report.skipped,
        **report.throughput.as_dict(),
    }
    print(json.dumps(summary))
    return 0


def merge(args) -> int:
    from nemo_neko.asr.generate import merge_shards

    cuts, records = merge_shards(args.out_dir, args.name, args.shards, args.dataset)
    print(json.dumps({"cuts": str(cuts), "records": str(records)}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return {"run": run, "merge": merge}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
