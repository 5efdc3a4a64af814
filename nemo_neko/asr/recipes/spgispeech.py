"""SPGISpeech: earnings calls, 5,000 hours of pre-segmented utterances (Kensho).

Not downloadable by script: request it at https://datasets.kensho.com/datasets/spgispeech.
lhotse's ``prepare_spgispeech`` prepares ``train`` and ``val`` together. Leaderboard test set:
the ESB ``test`` split, which is SPGISpeech's ``val`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import (
    CorpusInfo,
    ManualDownloadRequired,
    cuts_from_manifests,
    lhotse_dir,
    prepare_parts,
)

CORPUS = CorpusInfo(
    name="spgispeech",
    train_parts=("train",),
    eval_parts=("val",),
    source="https://datasets.kensho.com/datasets/spgispeech (form, then manual download)",
)


def download_spgispeech(target_dir: str | Path) -> Path:
    """SPGISpeech cannot be downloaded by script: raises with the instructions."""
    raise ManualDownloadRequired(
        f"SPGISpeech is distributed by form only: {CORPUS.source}. Unpack it into {target_dir} "
        "(train/ and val/ audio folders plus train.csv and val.csv), then run prepare."
    )


def prepare_spgispeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
    normalize_text: bool = True,
) -> dict[str, Path]:
    """Cut manifests of SPGISpeech ``train`` and ``val`` (default both)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_spgispeech as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir, lhotse_dir(output_dir), normalize_text=normalize_text, num_jobs=num_jobs
        )
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"])
            for p, m in manifests.items()
            if p in todo
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
