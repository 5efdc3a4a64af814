"""The run's tokenizer and packed data, prepared once (rank 0) and read by every rank.

* The tokenizer lives next to the model, in ``<run_dir>/tokenizer``: copied from
  ``data.tokenizer.path`` or, without one, a byte-level BPE trained on the training records.
* Tokenised datasets are cached in ``<run_dir>/cache`` (keyed by files, tokenizer, length), so
  every rank and every restart reads the same samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nemo_neko.data.mixture import MixtureConfig, PackedMixture
from nemo_neko.data.records import ReadReport, read_records
from nemo_neko.data.tokenizer import TextTokenizer, train_bpe_tokenizer
from nemo_neko.parallel.context import barrier as _barrier
from nemo_neko.parallel.context import global_rank as _rank
from nemo_neko.paths import RunPaths
from nemo_neko.tasks import get_task

log = logging.getLogger(__name__)


def prepare_tokenizer(run, run_dir: str | Path) -> TextTokenizer:
    """The run's tokenizer (created by rank 0 on the first call; collective)."""
    target = RunPaths(run_dir).tokenizer
    if _rank() == 0 and not (target / "tokenizer.json").exists():
        source = run.data.tokenizer.path or (RunPaths(run_dir).prepared_base() or {}).get(
            "tokenizer"
        )
        if source:
            TextTokenizer.from_dir(source).save(target)
        else:
            train_run_tokenizer(run, target)
    _barrier()
    return TextTokenizer.from_dir(target)


def train_run_tokenizer(run, target: str | Path) -> TextTokenizer:
    """A byte-level BPE of ``data.tokenizer.train_vocab_size`` trained on ``run``'s training
    records (prompt and target of each), saved in ``target``."""
    report = ReadReport()
    records = read_records(
        [p for spec in run.data.train for p in spec.paths],
        skip_invalid=run.data.skip_invalid,
        report=report,
    )
    texts = [get_task(r.task).prompt(r) + "\n" + get_task(r.task).target(r) for r in records]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=run.data.tokenizer.train_vocab_size)
    tokenizer.save(target)
    log.info(
        "trained a %d-token BPE tokenizer on %d records",
        run.data.tokenizer.train_vocab_size,
        len(records),
    )
    return tokenizer


def mixture_config(run, specs, epochs: int) -> MixtureConfig:
    return MixtureConfig(
        datasets=list(specs),
        epochs=epochs,
        seed=run.seed,
        seq_length=run.data.seq_length,
        max_sample_length=run.data.max_sample_length,
        pack_window=run.data.pack_window,
        prompt_format=run.data.prompt_format,
        system_prompt=run.data.system_prompt,
    )


def build_mixture(
    run, specs, tokenizer: TextTokenizer, run_dir: str | Path, epochs: int
) -> PackedMixture:
    """Packed sequences of ``specs``: rank 0 tokenises into the cache first, then all ranks read."""
    config = mixture_config(run, specs, epochs)
    cache = RunPaths(run_dir).cache
    if _rank() == 0:
        PackedMixture.build(config, tokenizer, cache_dir=cache, skip_invalid=run.data.skip_invalid)
    _barrier()
    return PackedMixture.build(
        config, tokenizer, cache_dir=cache, skip_invalid=run.data.skip_invalid
    )


def validation_mixture(run, tokenizer: TextTokenizer, run_dir: str | Path) -> PackedMixture | None:
    """Held-out sequences for the validation loss, with the training task ids.

    A held-out dataset named like a training dataset keeps that dataset's task id; one with a
    new name is left out of the validation loss (its task has no expert).
    """
    names = [spec.name for spec in run.data.train]
    held_out = [spec for spec in run.data.test if spec.name in names]
    if not held_out:
        return None
    ordered = [next((s for s in held_out if s.name == name), None) for name in names]
    # keep the training order so task id i is dataset i; absent datasets become empty slots
    from dataclasses import replace

    specs = [
        s if s is not None else replace(run.data.train[i], weight=0.0)
        for i, s in enumerate(ordered)
    ]
    return build_mixture(run, specs, tokenizer, run_dir, epochs=1)
