"""A mixture of correction datasets, packed, batched, sharded over data-parallel ranks, resumable.

The whole schedule is a pure function of the configuration, the record files and the tokenizer:

1. each dataset is tokenised once into samples (cached ``.npz``, see :mod:`nemo_neko.data.samples`);
2. per epoch, dataset ``d`` contributes ``round(weight_d * size_d)`` samples (whole passes for
   the integer part of the weight, a seeded draw without replacement for the rest), and the
   epoch's samples are shuffled with a seed derived from ``(seed, epoch)``;
3. each epoch's sample stream is packed into sequences (:func:`~nemo_neko.data.packing.plan_packing`,
   which fills bins longest sample first), and the epoch's sequences are shuffled again (seed
   ``(seed, epoch)``), so that any prefix of the schedule is a fair draw of lengths and datasets;
4. sequences form global batches of ``global_batch_size`` sequences; data-parallel rank ``r`` of
   ``R`` takes the ``r``-th contiguous slice of each global batch, as micro-batches.

A position is just the number of global batches consumed (:meth:`BatchSchedule.state_dict`), so a
resumed run yields exactly the batches an uninterrupted run would.

Task ids: dataset ``i`` of the mixture is task ``i`` on every one of its tokens; the same list
order maps datasets to experts (:class:`nemo_neko.moe.TaskRoutingConfig.for_datasets`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nemo_neko.data.packing import FIELDS, PackedSequence, pack_sequence, plan_packing
from nemo_neko.data.records import read_records
from nemo_neko.data.samples import PromptFormat, SampleBuilder, TokenizedDataset, cache_key
from nemo_neko.data.tokenizer import TextTokenizer

log = logging.getLogger(__name__)


@dataclass
class DatasetSpec:
    """One dataset of the mixture."""

    name: str
    """Dataset name (and the task/expert key)."""
    paths: list[str] = field(default_factory=list)
    """Record files (``.jsonl`` / ``.jsonl.gz``)."""
    weight: float = 1.0
    """Samples drawn per epoch, as a multiple of the dataset size (2.0 = twice, 0.5 = half)."""


@dataclass
class MixtureConfig:
    """The datasets and how they are mixed."""

    datasets: list[DatasetSpec] = field(default_factory=list)
    epochs: int = 3
    """Passes over the mixture (the paper: 3)."""
    seed: int = 1234
    seq_length: int = 2048
    """Tokens per packed sequence."""
    max_sample_length: int | None = None
    """Longest sample in tokens (default ``seq_length``); longer ones are shortened on the input."""
    pack_window: int = 4096
    """Samples packed together (see ``plan_packing``)."""
    prompt_format: PromptFormat = PromptFormat.plain
    """``plain`` or ``chat`` (the tokenizer's chat template; :mod:`nemo_neko.data.samples`)."""
    system_prompt: str | None = None
    """``chat``: the system turn; None = the template's default."""

    def validate(self) -> None:
        if not self.datasets:
            raise ValueError("the mixture has no datasets")
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"dataset names must be unique in a mixture, repeated: {duplicates}")
        for spec in self.datasets:
            if not spec.paths:
                raise ValueError(f"dataset {spec.name!r} has no record files")
            if spec.weight < 0:
                raise ValueError(f"dataset {spec.name!r}: weight must be >= 0, got {spec.weight}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_sample_length is not None and self.max_sample_length > self.seq_length:
            raise ValueError(
                f"max_sample_length={self.max_sample_length} exceeds seq_length={self.seq_length}"
            )

    @property
    def dataset_names(self) -> list[str]:
        return [d.name for d in self.datasets]


def tokenize_dataset(
    spec: DatasetSpec,
    tokenizer: TextTokenizer,
    max_length: int,
    cache_dir: str | Path | None = None,
    skip_invalid: bool = False,
    builder: SampleBuilder | None = None,
) -> TokenizedDataset:
    """Samples of one dataset, from the cache when its key (files, tokenizer, length, format)
    matches; ``builder`` renders them (default: plain samples of ``max_length``)."""
    builder = builder or SampleBuilder(tokenizer, max_length)
    cache_file = None
    if cache_dir is not None:
        key = cache_key(spec.paths, tokenizer, max_length, builder.rendering)
        cache_file = Path(cache_dir) / f"{spec.name}-{key}.npz"
        if cache_file.exists():
            return TokenizedDataset.load(cache_file)
    from nemo_neko.data.records import ReadReport

    report = ReadReport() if skip_invalid else None
    records = read_records(spec.paths, skip_invalid=skip_invalid, report=report)
    if report is not None and report.num_rejected:
        log.warning("dataset %s: %s", spec.name, report.summary())
    if not records:
        raise ValueError(f"dataset {spec.name!r}: no records in {spec.paths}")
    data = builder.build(records, spec.name)
    if data.stats.too_long:
        message = too_long_message(spec.name, records, data.stats.too_long, builder)
        if not len(data):
            raise ValueError(message)
        log.warning("%s", message)
    if cache_file is not None:
        data.save(cache_file)
    return data


def too_long_message(name: str, records, too_long: list[str], builder: SampleBuilder) -> str:
    """Why records of dataset ``name`` were left out, measured: what their shortest samples need."""
    left_out = set(too_long)
    needs = [builder.shortest_length(r) for r in records if r.id in left_out]
    longest = max(total for total, _ in needs)
    by_target = sum(target > builder.max_length for _, target in needs)
    cause = (
        f"{by_target} of them because of the target alone"
        if by_target
        else "the task's prompt makes up the difference; no target alone is too long"
    )
    every = "every one of its" if len(too_long) == len(records) else f"{len(too_long)} of its"
    return (
        f"dataset {name!r}: {every} {len(records)} records left out: even with the input cut "
        f"to nothing their samples need up to {longest} tokens, more than the "
        f"{builder.max_length} allowed ({cause}); raise the sequence length (data.seq_length, "
        f"--seq-length) or max_sample_length to at least {longest}; ids {too_long[:5]}"
    )


def epoch_samples(
    sizes: Sequence[int], weights: Sequence[float], epoch: int, seed: int
) -> np.ndarray:
    """The ``[M, 2]`` (dataset, sample) pairs of one epoch, shuffled (deterministic)."""
    parts = []
    for d, (size, weight) in enumerate(zip(sizes, weights)):
        whole, fraction = divmod(weight, 1.0)
        picks = [np.arange(size)] * int(whole)
        extra = int(round(fraction * size))
        if extra:
            rng = np.random.default_rng([seed, epoch, d, 1])
            picks.append(np.sort(rng.choice(size, size=extra, replace=False)))
        for pick in picks:
            parts.append(np.stack([np.full(len(pick), d), pick], axis=1))
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    np.random.default_rng([seed, epoch, 0]).shuffle(pairs, axis=0)
    return pairs


class PackedMixture:
    """All packed sequences of a mixture (all epochs), addressable by index.

    Attributes:
        datasets: tokenised datasets, in mixture order.
        task_ids: task id carried by each dataset's tokens (default: its index).
        sequences: per sequence, its ``(dataset, sample)`` pairs.
        epoch_starts: index of the first sequence of each epoch (plus the total at the end).
    """

    def __init__(
        self,
        config: MixtureConfig,
        datasets: list[TokenizedDataset],
        pad_id: int,
        task_ids: list[int] | None = None,
    ):
        config.validate()
        self.config = config
        self.datasets = datasets
        self.pad_id = pad_id
        self.task_ids = list(range(len(datasets))) if task_ids is None else list(task_ids)
        if len(self.task_ids) != len(datasets):
            raise ValueError(f"{len(self.task_ids)} task ids for {len(datasets)} datasets")
        sizes = [len(d) for d in datasets]
        weights = [spec.weight for spec in config.datasets]
        self.sequences: list[np.ndarray] = []
        self.epoch_starts = [0]
        for epoch in range(config.epochs):
            pairs = epoch_samples(sizes, weights, epoch, config.seed)
            lengths = np.array([datasets[d].lengths[i] for d, i in pairs], dtype=np.int64)
            groups = plan_packing(lengths, config.seq_length, config.pack_window)
            # packing places the longest samples first: without this shuffle a short run would
            # see only the longest utterances (of the datasets that have them)
            order = np.random.default_rng([config.seed, epoch, 2]).permutation(len(groups))
            for g in order.tolist():
                self.sequences.append(pairs[groups[g]])
            self.epoch_starts.append(len(self.sequences))

    @classmethod
    def build(
        cls,
        config: MixtureConfig,
        tokenizer: TextTokenizer,
        cache_dir: str | Path | None = None,
        skip_invalid: bool = False,
        task_ids: list[int] | None = None,
    ) -> PackedMixture:
        """Tokenise (or read from the cache) every dataset and pack all epochs.

        ``task_ids[i]`` is the task id carried by dataset ``i``'s tokens (default ``i``): a
        held-out mixture uses the task ids of the matching training datasets.
        """
        config.validate()
        max_length = config.max_sample_length or config.seq_length
        builder = SampleBuilder(tokenizer, max_length, config.prompt_format, config.system_prompt)
        datasets = [
            tokenize_dataset(spec, tokenizer, max_length, cache_dir, skip_invalid, builder)
            for spec in config.datasets
        ]
        return cls(config, datasets, tokenizer.pad_id, task_ids)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> PackedSequence:
        pairs = self.sequences[index]
        return pack_sequence(
            [self.datasets[d].sample(i) for d, i in pairs],
            [int(self.datasets[d].prompt_lengths[i]) for d, i in pairs],
            [self.task_ids[int(d)] for d, _ in pairs],
            self.config.seq_length,
            self.pad_id,
        )

    def tokens_in(self, index: int) -> int:
        return int(sum(self.datasets[d].lengths[i] for d, i in self.sequences[index]))

    def efficiency(self) -> float:
        """Share of all sequence slots filled with sample tokens."""
        used = sum(self.tokens_in(i) for i in range(len(self)))
        return used / max(1, len(self) * self.config.seq_length)


def collate(sequences: list[PackedSequence]) -> dict[str, np.ndarray]:
    """Stack packed sequences into ``[B, L]`` arrays (one per field)."""
    return {name: np.stack([getattr(s, name) for s in sequences]) for name in FIELDS}


class BatchSchedule:
    """Global batches of a :class:`PackedMixture`, this data-parallel rank's share, resumable.

    Args:
        mixture: the packed sequences.
        global_batch_size: sequences per optimizer step, over all data-parallel ranks.
        micro_batch_size: sequences per forward pass on one rank.
        dp_rank, dp_size: this rank and the data-parallel world size.
    """

    def __init__(
        self,
        mixture: PackedMixture,
        global_batch_size: int,
        micro_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
    ):
        if global_batch_size % (micro_batch_size * dp_size):
            raise ValueError(
                f"global_batch_size={global_batch_size} sequences is not divisible by "
                f"micro_batch_size x data_parallel_size = {micro_batch_size} x {dp_size}"
            )
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank={dp_rank} outside [0, {dp_size})")
        self.mixture = mixture
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.step = 0

    @property
    def num_steps(self) -> int:
        """Full global batches available (a final partial batch is not used)."""
        return len(self.mixture) // self.global_batch_size

    @property
    def dropped_sequences(self) -> int:
        return len(self.mixture) - self.num_steps * self.global_batch_size

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per step on each rank (gradient-accumulation steps)."""
        return self.global_batch_size // (self.micro_batch_size * self.dp_size)

    def step_sequences(self, step: int) -> range:
        """Indices of the sequences this rank reads at ``step``."""
        per_rank = self.global_batch_size // self.dp_size
        start = step * self.global_batch_size + self.dp_rank * per_rank
        return range(start, start + per_rank)

    def micro_batches(self, step: int) -> list[dict[str, np.ndarray]]:
        """This rank's micro-batches of ``step``, each ``{field: [micro_batch_size, L]}``."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside [0, {self.num_steps})")
        indices = list(self.step_sequences(step))
        m = self.micro_batch_size
        return [
            collate([self.mixture[i] for i in indices[k : k + m]])
            for k in range(0, len(indices), m)
        ]

    def __iter__(self) -> Iterator[list[dict[str, np.ndarray]]]:
        while self.step < self.num_steps:
            batches = self.micro_batches(self.step)
            self.step += 1
            yield batches

    def state_dict(self) -> dict:
        return {"step": self.step, "num_sequences": len(self.mixture)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_sequences", len(self.mixture)) != len(self.mixture):
            raise ValueError(
                f"cannot resume: the saved data position was for {state['num_sequences']} packed "
                f"sequences, this mixture has {len(self.mixture)} (data, tokenizer or config changed)"
            )
        self.step = int(state["step"])
