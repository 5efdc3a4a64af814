"""GigaSpeech: podcasts, YouTube and audiobooks; long recordings with segment transcripts.

Downloading needs the password SpeechColab sends after their form, and the ``speechcolab``
package (lhotse's ``download_gigaspeech``). Training part: ``XL`` (10k hours; ``L``, ``M``,
``S``, ``XS`` are its subsets). Leaderboard test set: ``TEST``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_neko.asr.recipes._common import CorpusInfo, cuts_from_manifests, lhotse_dir, prepare_parts

CORPUS = CorpusInfo(
    name="gigaspeech",
    train_parts=("XL",),
    dev_parts=("DEV",),
    eval_parts=("TEST",),
    source="https://github.com/SpeechColab/GigaSpeech (password by form; pip install speechcolab)",
)


def download_gigaspeech(
    target_dir: str | Path, password: str, parts: Sequence[str] | str | None = None
) -> Path:
    """Download parts with lhotse (needs ``password`` and ``pip install speechcolab``)."""
    from lhotse.recipes import download_gigaspeech as lhotse_download

    return Path(lhotse_download(password, target_dir, dataset_parts=CORPUS.select(parts)))


def prepare_gigaspeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | str | None = None,
    *,
    force: bool = False,
    num_jobs: int = 1,
) -> dict[str, Path]:
    """Cut manifests of GigaSpeech parts (``XL``, ``L``, ``M``, ``S``, ``XS``, ``DEV``, ``TEST``;
    default: XL, DEV, TEST)."""

    def build(todo: list[str]) -> dict:
        from lhotse.recipes import prepare_gigaspeech as lhotse_prepare

        manifests = lhotse_prepare(
            corpus_dir, lhotse_dir(output_dir), dataset_parts=todo, num_jobs=num_jobs
        )
        return {
            p: cuts_from_manifests(m["recordings"], m["supervisions"]) for p, m in manifests.items()
        }

    return prepare_parts(CORPUS, output_dir, CORPUS.select(parts), build, force=force)
