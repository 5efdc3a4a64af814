"""Mozilla Common Voice, English: read sentences, one utterance per clip.

lhotse's ``download_commonvoice`` builds the release URL but, as its own comment says, Mozilla's
download URLs changed: get the English archive from https://commonvoice.mozilla.org/datasets
and unpack it under ``<corpus_dir>`` (``<corpus_dir>/en/{train,dev,test}.tsv`` + ``clips/``).
Leaderboard (ESB) test set: ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import CorpusInfo, cuts_from_manifests, lhotse_dir, prepare_parts

CORPUS = CorpusInfo(
    name="commonvoice",
    train_parts=("train",),
    dev_parts=("dev",),
    eval_parts=("test",),
    source="https://commonvoice.mozilla.org/datasets (accept the terms, download the en archive)",
)


def download_commonvoice(
    target_dir: str | Path, release: str = "cv-corpus-13.0-2023-03-09"
) -> Path:
    """Try lhotse's Common Voice download of the English archive (see the module docstring)."""
    from lhotse.recipes.commonvoice import download_commonvoice as lhotse_download

    lhotse_download(target_dir, languages="en", release=release)
    return Path(target_dir) / release


def prepare_commonvoice(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
) -> dict[str, Path]:
    """Cut manifests of Common Voice English ``train``, ``dev``, ``test`` (default all)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_commonvoice as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir, lhotse_dir(output_dir), languages="en", splits=todo, num_jobs=num_jobs
        )
        english = manifests.get("en", {})
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"]) for p, m in english.items()
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
