"""Corpus recipes: the Open ASR Leaderboard corpora as lhotse cut manifests, one utterance per cut.

One module per corpus, each with ``CORPUS`` (its parts), ``download_<corpus>()`` (lhotse's
downloader, or :class:`ManualDownloadRequired` with instructions where lhotse cannot download)
and ``prepare_<corpus>(corpus_dir, output_dir, parts=None, *, force=False, ...)`` (lhotse's
``prepare_*`` then cuts trimmed to supervisions, written to
``<output_dir>/<corpus>_cuts_<part>.jsonl.gz``, complete parts skipped: see ``_common.py``).

=================  ===========================  ================  ==============================
corpus             training parts               leaderboard test  download
=================  ===========================  ================  ==============================
``librispeech``    train-clean-100/-360,        test-clean,       lhotse
                   train-other-500              test-other
``tedlium``        train                        test              lhotse
``gigaspeech``     XL                           TEST              lhotse (password, speechcolab)
``spgispeech``     train                        val               manual (form)
``earnings22``     train (split file) / all     test (split file) manual (git-lfs)
``ami``            train (IHM)                  test              lhotse
``voxpopuli``      train                        test              lhotse
``commonvoice``    train                        test              manual (Mozilla terms)
=================  ===========================  ================  ==============================

``open_asr_leaderboard`` is no corpus but the leaderboard's own seven test sets
(``hf-audio/open-asr-leaderboard`` and the chunked Earnings-22) read from local Hugging Face
snapshots, its parts the leaderboard's set keys (``ami_cleaned_test``, ...,
``earnings22_cleaned_aa_chunked_test``), written as ``<dataset>_cuts_<split>.jsonl.gz``.

Importing this package imports no lhotse: the recipe modules import it inside their functions.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nemo_neko.asr.recipes._common import CorpusInfo, ManualDownloadRequired, RecipeInputError

CORPORA = (
    "librispeech",
    "tedlium",
    "gigaspeech",
    "spgispeech",
    "earnings22",
    "ami",
    "voxpopuli",
    "commonvoice",
    "open_asr_leaderboard",
)
"""Registered corpora (module names in this package)."""


def recipe(corpus: str) -> ModuleType:
    """The recipe module of ``corpus``."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    return importlib.import_module(f"nemo_neko.asr.recipes.{corpus}")


def corpus_info(corpus: str) -> CorpusInfo:
    return recipe(corpus).CORPUS


def leaderboard_test_sets() -> dict[str, tuple[str, ...]]:
    """Corpus -> its Open ASR Leaderboard test parts (the evaluation inputs)."""
    return {name: corpus_info(name).eval_parts for name in CORPORA}


__all__ = [
    "CORPORA",
    "CorpusInfo",
    "ManualDownloadRequired",
    "RecipeInputError",
    "corpus_info",
    "leaderboard_test_sets",
    "recipe",
]
