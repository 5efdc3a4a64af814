"""AMI meeting corpus, individual headset microphones (IHM), the full-corpus-ASR partition.

lhotse downloads audio and annotations (``download_ami``) and cuts meetings into utterances at
the annotated segments. Leaderboard test set: ``test`` (IHM).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import CorpusInfo, cuts_from_manifests, lhotse_dir, prepare_parts

CORPUS = CorpusInfo(
    name="ami",
    train_parts=("train",),
    dev_parts=("dev",),
    eval_parts=("test",),
    source="https://groups.inf.ed.ac.uk/ami/corpus/ (lhotse downloads it)",
)


def download_ami(target_dir: str | Path, mic: str = "ihm") -> Path:
    """Download AMI audio and annotations with lhotse."""
    from lhotse.recipes import download_ami as lhotse_download

    return Path(lhotse_download(target_dir, mic=mic))


def prepare_ami(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    mic: str = "ihm",
    partition: str = "full-corpus-asr",
    normalize_text: str = "kaldi",
    annotations_dir: str | None = None,
) -> dict[str, Path]:
    """Cut manifests of AMI ``train``, ``dev``, ``test`` (default all)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_ami as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir,
            annotations_dir=annotations_dir,
            output_dir=lhotse_dir(output_dir),
            mic=mic,
            partition=partition,
            normalize_text=normalize_text,
        )
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"])
            for p, m in manifests.items()
            if p in todo
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
