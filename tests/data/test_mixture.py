"""The mixture: weights and epochs, determinism, data-parallel shards, exact resume, caching."""

import numpy as np
import pytest

from nemo_neko.data.mixture import (
    BatchSchedule,
    DatasetSpec,
    MixtureConfig,
    PackedMixture,
    epoch_samples,
    tokenize_dataset,
)
from nemo_neko.data.records import CorrectionRecord, read_records, write_records
from nemo_neko.data.sample_data import DOMAINS, sample_paths
from nemo_neko.data.tokenizer import train_bpe_tokenizer

WORDS = "list flights from boston to denver on monday morning please show me fares".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    paths = {}
    for name, count, task in (("atis", 60, "asr"), ("gec", 25, "tec_grammar")):
        records = []
        for i in range(count):
            words = list(rng.choice(WORDS, size=int(rng.integers(3, 12))))
            text = " ".join(words)
            if task == "asr":
                records.append(
                    CorrectionRecord(f"{name}{i}", task, name, text, hypotheses=[text, text[:-1]])
                )
            else:
                records.append(
                    CorrectionRecord(f"{name}{i}", task, name, text, source=text.upper())
                )
        paths[name] = root / f"{name}.jsonl"
        write_records(paths[name], records)
    tokenizer = train_bpe_tokenizer(
        [" ".join(rng.choice(WORDS, size=10)) for _ in range(200)], vocab_size=300, min_frequency=1
    )
    return paths, tokenizer, root


def config(paths, **kwargs):
    specs = [
        DatasetSpec("atis", [str(paths["atis"])]),
        DatasetSpec("gec", [str(paths["gec"])], weight=kwargs.pop("gec_weight", 1.0)),
    ]
    return MixtureConfig(datasets=specs, **{"epochs": 2, "seq_length": 512, "seed": 3, **kwargs})


def test_epoch_samples_weights_and_determinism():
    pairs = epoch_samples([10, 4], [1.0, 2.5], epoch=0, seed=7)
    counts = np.bincount(pairs[:, 0])
    assert counts.tolist() == [10, 10]  # 4 * 2.5 = 10 draws of the second dataset
    second = pairs[pairs[:, 0] == 1, 1]
    assert sorted(np.bincount(second, minlength=4).tolist()) == [2, 2, 3, 3]
    assert np.array_equal(pairs, epoch_samples([10, 4], [1.0, 2.5], epoch=0, seed=7))
    assert not np.array_equal(pairs, epoch_samples([10, 4], [1.0, 2.5], epoch=1, seed=7))
    half = epoch_samples([10], [0.5], epoch=0, seed=7)
    assert len(half) == 5 and len(set(half[:, 1].tolist())) == 5


def test_mixture_covers_every_sample_each_epoch_with_task_ids(corpus):
    paths, tokenizer, _ = corpus
    mixture = PackedMixture.build(config(paths), tokenizer)
    assert [d.name for d in mixture.datasets] == ["atis", "gec"]
    for epoch in range(2):
        seen = np.concatenate(
            mixture.sequences[mixture.epoch_starts[epoch] : mixture.epoch_starts[epoch + 1]]
        )
        assert sorted(map(tuple, seen.tolist())) == [(0, i) for i in range(60)] + [
            (1, i) for i in range(25)
        ]
    seq = mixture[0]
    # every token carries its dataset's task id, aligned with the tokens of that dataset
    for segment in range(seq.segment_ids.max() + 1):
        where = seq.segment_ids == segment
        d, i = mixture.sequences[0][segment]
        assert (seq.task_ids[where] == d).all()
        assert np.array_equal(seq.input_ids[where], mixture.datasets[d].sample(i))


def test_same_seed_same_batches_other_seed_other_batches(corpus):
    paths, tokenizer, _ = corpus
    first = PackedMixture.build(config(paths), tokenizer)
    again = PackedMixture.build(config(paths), tokenizer)
    other = PackedMixture.build(config(paths, seed=4), tokenizer)
    assert all(np.array_equal(a, b) for a, b in zip(first.sequences, again.sequences))
    assert not all(np.array_equal(a, b) for a, b in zip(first.sequences, other.sequences))


def test_data_parallel_shards_partition_each_global_batch(corpus):
    paths, tokenizer, _ = corpus
    mixture = PackedMixture.build(config(paths, seq_length=256), tokenizer)
    whole = BatchSchedule(mixture, global_batch_size=8, micro_batch_size=2)
    shards = [BatchSchedule(mixture, 8, 2, dp_rank=r, dp_size=2) for r in range(2)]
    assert whole.num_micro_batches == 4 and shards[0].num_micro_batches == 2
    for step in range(whole.num_steps):
        union = [i for shard in shards for i in shard.step_sequences(step)]
        assert union == list(whole.step_sequences(step))
        full = np.concatenate([b["input_ids"] for b in whole.micro_batches(step)])
        parts = np.concatenate([b["input_ids"] for s in shards for b in s.micro_batches(step)])
        assert np.array_equal(full, parts)
    assert whole.num_steps * 8 + whole.dropped_sequences == len(mixture)
    with pytest.raises(
        ValueError, match="not divisible by micro_batch_size x data_parallel_size = 3 x 2"
    ):
        BatchSchedule(mixture, 8, 3, dp_size=2)


def test_resume_yields_exactly_the_uninterrupted_batches(corpus):
    paths, tokenizer, _ = corpus
    mixture = PackedMixture.build(config(paths, seq_length=256), tokenizer)
    uninterrupted = [batches for batches in BatchSchedule(mixture, 4, 2)]
    first_run = BatchSchedule(mixture, 4, 2)
    for _, _ in zip(range(3), first_run):
        pass
    saved = first_run.state_dict()
    rebuilt = PackedMixture.build(config(paths, seq_length=256), tokenizer)  # a new process
    resumed = BatchSchedule(rebuilt, 4, 2)
    resumed.load_state_dict(saved)
    rest = list(resumed)
    assert len(rest) == len(uninterrupted) - 3
    for got, want in zip(rest, uninterrupted[3:]):
        for g, w in zip(got, want):
            assert all(np.array_equal(g[k], w[k]) for k in w)
    changed = PackedMixture.build(config(paths, seq_length=256, epochs=3), tokenizer)
    with pytest.raises(ValueError, match="cannot resume: the saved data position was for"):
        BatchSchedule(changed, 4, 2).load_state_dict(saved)


def test_tokenized_cache_is_reused_and_invalidated(corpus, tmp_path):
    paths, tokenizer, _ = corpus
    spec = DatasetSpec("atis", [str(paths["atis"])])
    first = tokenize_dataset(spec, tokenizer, 256, cache_dir=tmp_path)
    files = list(tmp_path.glob("atis-*.npz"))
    assert len(files) == 1
    again = tokenize_dataset(spec, tokenizer, 256, cache_dir=tmp_path)
    assert np.array_equal(first.tokens, again.tokens)
    tokenize_dataset(spec, tokenizer, 300, cache_dir=tmp_path)  # other settings, other entry
    assert len(list(tmp_path.glob("atis-*.npz"))) == 2


def test_mixture_config_errors(corpus):
    paths, _, _ = corpus
    for cfg, message in [
        (MixtureConfig(), "the mixture has no datasets"),
        (config(paths, epochs=0), "epochs must be >= 1"),
        (config(paths, gec_weight=-1), "weight must be >= 0"),
        (config(paths, max_sample_length=4096), "exceeds seq_length=512"),
        (
            MixtureConfig(datasets=[DatasetSpec("a", ["x"]), DatasetSpec("a", ["y"])]),
            r"repeated: \['a'\]",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            cfg.validate()


@pytest.mark.slow
def test_sample_data_packs_at_97_percent_at_2048():
    records = [str(p) for p in sample_paths("train")]
    from nemo_neko.data.records import read_records
    from nemo_neko.tasks import get_task

    texts = [get_task(r.task).prompt(r) + "\n" + r.reference for r in read_records(records)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=4096)
    cfg = MixtureConfig(
        datasets=[DatasetSpec(d, [p]) for d, p in zip(DOMAINS, records)], epochs=1, seq_length=2048
    )
    assert PackedMixture.build(cfg, tokenizer).efficiency() >= 0.97


def test_the_first_batches_are_a_fair_draw_of_lengths_not_the_longest_samples():
    """Packing fills bins longest first; the epoch's sequences are shuffled afterwards, so a short
    run (the embedded default reads a few percent of an epoch) sees every length and dataset."""
    cfg = MixtureConfig(
        datasets=[DatasetSpec(d, sample_paths("train", (d,))) for d in DOMAINS],
        seq_length=512,
        epochs=1,
    )
    tokenizer = train_bpe_tokenizer(
        [r.reference for p in cfg.datasets for r in read_records(p.paths)[:200]], vocab_size=2000
    )
    mixture = PackedMixture.build(cfg, tokenizer)
    lengths = np.concatenate([d.lengths for d in mixture.datasets])
    first = np.concatenate(mixture.sequences[:100])  # the first 100 sequences, ~3 % of the epoch
    first_lengths = np.array([mixture.datasets[d].lengths[i] for d, i in first])
    assert abs(np.median(first_lengths) - np.median(lengths)) < 0.25 * np.median(lengths)
    assert set(first[:, 0].tolist()) == set(range(len(DOMAINS)))
