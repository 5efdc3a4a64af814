"""Open ASR Leaderboard corpora -> lhotse cut manifests, one utterance per cut (lhotse recipes).

    python data_prep/prepare_asr_corpus.py list
    python data_prep/prepare_asr_corpus.py download librispeech /data/asr --parts train eval
    python data_prep/prepare_asr_corpus.py prepare librispeech /data/asr/LibriSpeech manifests --parts train eval
    python data_prep/prepare_asr_corpus.py prepare earnings22 /data/speech-datasets/earnings22 manifests \
        --option split_file=esb_earnings22_split.tsv
    python data_prep/prepare_asr_corpus.py download gigaspeech /data/asr --option password=XXXX
    python data_prep/prepare_asr_corpus.py prepare open_asr_leaderboard /data/oal/open-asr-leaderboard \
        manifests --parts eval --option chunked=/data/oal/earnings22-chunked \
        --option parents=/data/oal/earnings22-parents

``--parts`` takes part names or the groups ``train``, ``eval`` (the leaderboard test sets),
``dev``, ``all`` (default). Writes ``<manifests>/<corpus>_cuts_<part>.jsonl.gz``; parts whose
manifest exists and validates are skipped, so a rerun only does what is missing. Recipe
options without a flag: ``--option key=value`` (JSON value), e.g. ``num_jobs=8``,
``normalize_text="lower"``, ``mic="ihm"``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nemo_neko.data.cli import key_value_option


def build_parser() -> argparse.ArgumentParser:
    from nemo_neko.asr.recipes import CORPORA  # a tuple of names: no lhotse import

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="corpora, their parts and leaderboard test sets")
    for name, text in (("download", "fetch a corpus (lhotse)"), ("prepare", "write cut manifests")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("corpus", choices=CORPORA)
        if name == "download":
            cmd.add_argument("target_dir")
        else:
            cmd.add_argument("corpus_dir")
            cmd.add_argument("output_dir")
            cmd.add_argument("--force", action="store_true", help="rebuild complete manifests too")
        cmd.add_argument("--parts", nargs="+", default=None, help="parts or train/eval/dev/all")
        cmd.add_argument(
            "--option",
            action="append",
            type=key_value_option,
            default=[],
            metavar="KEY=VALUE",
            help="recipe option (JSON value)",
        )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from nemo_neko.asr.recipes import CORPORA, ManualDownloadRequired, RecipeInputError, recipe

    if args.command == "list":
        for name in CORPORA:
            info = recipe(name).CORPUS
            print(
                f"{name:20s} train {','.join(info.train_parts):40s} "
                f"test {','.join(info.eval_parts):20s} {info.source}"
            )
        return 0
    module = recipe(args.corpus)
    options = dict(args.option)
    if args.command == "download":
        download = getattr(module, f"download_{args.corpus}")
        if args.parts is not None:
            options["parts"] = args.parts
        try:
            print(download(args.target_dir, **options))
        except ManualDownloadRequired as err:
            print(f"{args.corpus}: {err}", file=sys.stderr)
            return 2
        return 0
    prepare = getattr(module, f"prepare_{args.corpus}")
    try:
        paths = prepare(args.corpus_dir, args.output_dir, args.parts, force=args.force, **options)
    except RecipeInputError as err:
        print(f"{args.corpus}: {err}", file=sys.stderr)
        return 2
    for part, path in paths.items():
        print(f"{args.corpus} {part}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
