"""TED-LIUM release 3: TED talks, long recordings with segment-level transcripts (STM).

lhotse's ``prepare_tedlium`` reads ``<tedlium_root>/legacy/{train,dev,test}/{sph,stm}``; the
talks are cut into utterances at their STM segments. Leaderboard test set: ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import CorpusInfo, cuts_from_manifests, lhotse_dir, prepare_parts

CORPUS = CorpusInfo(
    name="tedlium",
    train_parts=("train",),
    dev_parts=("dev",),
    eval_parts=("test",),
    source="https://www.openslr.org/51 (lhotse downloads it)",
)


def download_tedlium(target_dir: str | Path) -> Path:
    """Download and unpack TED-LIUM 3 with lhotse. Returns the release folder."""
    from lhotse.recipes import download_tedlium as lhotse_download

    return Path(lhotse_download(target_dir))


def prepare_tedlium(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
    normalize_text: str = "none",
) -> dict[str, Path]:
    """Cut manifests of TED-LIUM 3 parts (``train``, ``dev``, ``test``; default all)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_tedlium as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir,
            output_dir=lhotse_dir(output_dir),
            dataset_parts=todo,
            num_jobs=num_jobs,
            normalize_text=normalize_text,
        )
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"]) for p, m in manifests.items()
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
