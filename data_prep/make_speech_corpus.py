"""Synthesise a tiny LibriSpeech-layout corpus with espeak-ng (the CPU demo's "real" audio).

    python data_prep/make_speech_corpus.py runs/demo --parts train-clean-100=24 test-clean=8

Writes ``runs/demo/LibriSpeech/<part>/<speaker>/<chapter>/*.flac`` and ``*.trans.txt``, which
lhotse's real ``prepare_librispeech`` reads. The whole CPU data path, nothing downloaded::

    python data_prep/make_speech_corpus.py runs/demo --parts train-clean-100=24
    python data_prep/prepare_asr_corpus.py prepare librispeech runs/demo/LibriSpeech runs/demo/manifests
    python data_prep/generate_nbest.py run runs/demo/manifests/librispeech_cuts_train-clean-100.jsonl.gz \
        --out-dir runs/demo/nbest --name demo --dataset librispeech --backend pocketsphinx \
        --duplicates unique_pad --batch-size 4
    python -m nemo_neko.data pack librispeech=runs/demo/nbest/demo.records.jsonl.gz \
        --train-tokenizer 512 --seq-length 256

Needs the Debian package espeak-ng (``apt-get install -y espeak-ng``).
"""

from __future__ import annotations

import argparse
import sys


def _part(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"--parts takes NAME=COUNT, got {text!r}")
    return name, int(count)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output folder")
    parser.add_argument(
        "--parts", nargs="+", type=_part, default=[("train-clean-100", 24)], metavar="NAME=COUNT"
    )
    parser.add_argument("--speakers", type=int, default=2)
    args = parser.parse_args(argv)

    from nemo_neko.asr.synth import write_librispeech_corpus

    print(write_librispeech_corpus(args.root, dict(args.parts), speakers=args.speakers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
