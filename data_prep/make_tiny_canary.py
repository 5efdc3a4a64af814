"""Build a tiny random-weight Canary (NeMo EncDecMultiTaskModel) and save it as a .nemo file.

    python data_prep/make_tiny_canary.py runs/tiny_canary.nemo
    python data_prep/make_tiny_canary.py runs/tiny_canary.nemo --text-file corpus.txt --seed 1

Nothing is downloaded: the FastConformer encoder and transformer decoder get random weights,
the aggregate tokenizer (special tokens + an English BPE model) is trained here on the text
(default: the synthetic-speech sentences). For CPU tests and demos of the real .nemo loading
and transcribe() paths; its transcripts are garbage.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the .nemo file to write")
    parser.add_argument("--text-file", help="tokenizer training text, one sentence per line")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from nemo_neko.asr.tiny_canary import TinyCanaryConfig, save_tiny_canary

    texts = None
    if args.text_file:
        with open(args.text_file, encoding="utf-8") as fh:
            texts = [line.strip() for line in fh if line.strip()]
    path = save_tiny_canary(args.output, texts, TinyCanaryConfig(seed=args.seed))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
