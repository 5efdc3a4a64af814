"""LibriSpeech (OpenSLR 12): read audiobooks, one utterance per file.

Layout (what lhotse's ``prepare_librispeech`` reads)::

    <corpus_dir>/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <corpus_dir>/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

References are lower-cased by default (lhotse's ``normalize_text="lower"``): LibriSpeech's
transcripts are upper case, Canary with ``pnc="no"`` (and PocketSphinx) write lower case, and
HyPoradise's LibriSpeech N-best lists are lower case too; ``normalize_text="none"`` keeps them.
Leaderboard test sets: ``test-clean``, ``test-other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import (
    CorpusInfo,
    check_parts_exist,
    cuts_from_manifests,
    lhotse_dir,
    prepare_parts,
)

CORPUS = CorpusInfo(
    name="librispeech",
    train_parts=("train-clean-100", "train-clean-360", "train-other-500"),
    dev_parts=("dev-clean", "dev-other"),
    eval_parts=("test-clean", "test-other"),
    source="https://www.openslr.org/12 (lhotse downloads it)",
)
LAYOUT = "<corpus_dir>/<part>/<speaker>/<chapter>/*.flac + *.trans.txt"


def download_librispeech(target_dir: str | Path, parts: Sequence[str] | str | None = None) -> Path:
    """Download and unpack parts with lhotse (skips parts already unpacked). Returns the
    ``LibriSpeech`` folder."""
    from lhotse.recipes import download_librispeech as lhotse_download

    root = lhotse_download(target_dir, dataset_parts=CORPUS.select(parts))
    return Path(root) / "LibriSpeech"


def prepare_librispeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
    normalize_text: str = "lower",
) -> dict[str, Path]:
    """Cut manifests of LibriSpeech parts (default: every part found in ``corpus_dir``).

    Args:
        corpus_dir: the ``LibriSpeech`` folder.
        output_dir: manifest folder.
        parts: part names or a group (``train``, ``eval``, ``dev``, ``all``).
        force: rebuild complete manifests too.
        num_jobs: lhotse's parsing threads.
        normalize_text: lhotse's option: ``lower`` (default) or ``none`` (upper case, as published).
    """
    if parts is None:
        wanted = [p for p in CORPUS.all_parts if (Path(corpus_dir) / p).is_dir()]
        if not wanted:
            raise FileNotFoundError(f"{corpus_dir}: no LibriSpeech part folders ({LAYOUT})")
    else:
        wanted = CORPUS.select(parts)

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_librispeech as lhotse_prepare

        check_parts_exist(corpus_dir, todo, LAYOUT)
        manifests = lhotse_prepare(
            corpus_dir,
            dataset_parts=todo,
            output_dir=lhotse_dir(output_dir),
            normalize_text=normalize_text,
            num_jobs=num_jobs,
        )
        return {
            part: cuts_from_manifests(m["recordings"], m["supervisions"])
            for part, m in manifests.items()
            if part in todo
        }

    return prepare_parts(CORPUS, output_dir, wanted, build, force=force)
