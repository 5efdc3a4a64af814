"""The HyPoradise sample shipped with nemo-neko (the embedded default's data).

``nemo_neko/assets/hyporadise/`` holds real Whisper 5-best lists with references from HyPoradise
(MIT licence, notice in that folder), as compressed record files:

* ``train/<domain>.jsonl.gz`` and ``test/<domain>.jsonl.gz`` for seven domains: ``atis``, ``cv``,
  ``lrs2``, ``ls_clean``, ``ls_other``, ``swbd``, ``td3``; one dataset per domain, so each gets
  its own expert.
* ATIS has a published train split; the six other domains were released as test sets only, so
  :func:`build_hyporadise_sample` splits each of them with a seeded shuffle (a quarter held out
  for testing, the rest for training). Every record keeps ``meta.origin`` (``<file>#<index>``),
  so the original files can be put back together from the two splits.

``python data_prep/build_hyporadise_sample.py ../shared/data/hyporadise`` rebuilds the folder
(byte for byte: the shuffle is seeded and the gzip headers carry no timestamp).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from nemo_neko.data.importers.hyporadise import import_hyporadise
from nemo_neko.data.records import write_records

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "hyporadise"
"""Where the shipped sample lives."""

DOMAINS = ("atis", "cv", "lrs2", "ls_clean", "ls_other", "swbd", "td3")
"""Dataset names of the sample, one per HyPoradise domain."""

TEST_FRACTION = 0.25
SPLIT_SEED = 20231210


def sample_paths(
    split: str, domains: tuple[str, ...] = DOMAINS, root: Path = ASSET_DIR
) -> list[Path]:
    """Record files of ``split`` (``"train"`` or ``"test"``) for ``domains``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = [root / split / f"{domain}.jsonl.gz" for domain in domains]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"HyPoradise sample files missing: {missing}")
    return paths


def build_hyporadise_sample(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike = ASSET_DIR,
    *,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> dict[str, dict[str, int]]:
    """Write ``train/`` and ``test/`` record files from the HyPoradise JSON files in ``source_dir``.

    Returns ``{domain: {"train": n, "test": n}}``.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for domain in DOMAINS:
        if domain == "atis":
            train = list(
                import_hyporadise(
                    source_dir / "train_atis.json", dataset="atis", id_prefix="atis-train"
                )
            )
            test = list(
                import_hyporadise(
                    source_dir / "test_atis.json", dataset="atis", id_prefix="atis-test"
                )
            )
        else:
            records = list(  # one file per domain, split below: ``<domain>-<index>`` ids
                import_hyporadise(
                    source_dir / f"test_{domain}.json", dataset=domain, id_prefix=domain
                )
            )
            order = list(range(len(records)))
            random.Random(f"{seed}-{domain}").shuffle(order)
            num_test = round(len(records) * test_fraction)
            held_out = set(order[:num_test])
            test = [r for i, r in enumerate(records) if i in held_out]
            train = [r for i, r in enumerate(records) if i not in held_out]
        write_records(out_dir / "train" / f"{domain}.jsonl.gz", train)
        write_records(out_dir / "test" / f"{domain}.jsonl.gz", test)
        counts[domain] = {"train": len(train), "test": len(test)}
    return counts
