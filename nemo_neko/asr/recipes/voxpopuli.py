"""VoxPopuli, English ASR subset: European Parliament speeches with segment transcripts.

lhotse downloads the audio (``download_voxpopuli(subset="asr")``); its ``prepare_voxpopuli``
fetches the ``asr_en.tsv.gz`` annotations into ``<output_dir>/lhotse/`` unless already there
(put the file there beforehand on machines without internet). Leaderboard test set: ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import CorpusInfo, cuts_from_manifests, lhotse_dir, prepare_parts

CORPUS = CorpusInfo(
    name="voxpopuli",
    train_parts=("train",),
    dev_parts=("dev",),
    eval_parts=("test",),
    source="https://github.com/facebookresearch/voxpopuli (lhotse downloads it)",
)


def download_voxpopuli(target_dir: str | Path) -> Path:
    """Download the VoxPopuli ASR audio with lhotse."""
    from lhotse.recipes import download_voxpopuli as lhotse_download

    return Path(lhotse_download(target_dir, subset="asr"))


def prepare_voxpopuli(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
    lang: str = "en",
) -> dict[str, Path]:
    """Cut manifests of VoxPopuli ``train``, ``dev``, ``test`` (default all)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_voxpopuli as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir, lhotse_dir(output_dir), task="asr", lang=lang, num_jobs=num_jobs
        )
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"])
            for p, m in manifests.items()
            if p in todo
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
