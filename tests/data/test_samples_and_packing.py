"""Tokeniser, samples (loss masking, truncation) and packing (boundaries, masks, task ids)."""

import json

import numpy as np
import pytest

from nemo_neko.data.packing import (
    block_causal_mask,
    cu_seqlens,
    pack_sequence,
    packing_efficiency,
    plan_packing,
)
from nemo_neko.data.records import CorrectionRecord
from nemo_neko.data.samples import PROMPT_SEPARATOR, SampleBuilder, TokenizedDataset
from nemo_neko.data.tokenizer import TextTokenizer, train_bpe_tokenizer
from nemo_neko.tasks import get_task

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven flights leave boston for denver".split()
)


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=12)) for _ in range(300)]
    texts += [get_task("asr").prompt(asr_record("x", 5, 5))]
    return train_bpe_tokenizer(texts, vocab_size=400)


def asr_record(rid, num_hyps, words, ref_words=4):
    hyps = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) for i in range(num_hyps)]
    return CorrectionRecord(
        id=rid,
        task="asr",
        dataset="d",
        hypotheses=hyps,
        reference=" ".join(WORDS[j % len(WORDS)] for j in range(ref_words)),
    )


def test_tokenizer_round_trip_through_a_hf_directory(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tok")
    loaded = TextTokenizer.from_dir(tmp_path / "tok")
    text = "seven flights leave boston"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.decode(loaded.encode(text)) == text
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (
        tokenizer.bos_id,
        tokenizer.eos_id,
        tokenizer.pad_id,
    )
    assert loaded.fingerprint() == tokenizer.fingerprint()
    # a Mixtral-style config: tokens given as AddedToken dicts, no pad token
    config = {
        "bos_token": {"content": "<s>"},
        "eos_token": {"content": "</s>"},
        "add_bos_token": True,
    }
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    mixtral_like = TextTokenizer.from_dir(tmp_path / "tok")
    assert mixtral_like.pad_id == mixtral_like.eos_id and mixtral_like.add_bos


def test_tokenizer_directory_errors(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        TextTokenizer.from_dir(tmp_path)
    tokenizer.save(tmp_path / "t")
    (tmp_path / "t" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    with pytest.raises(ValueError, match="eos_token '<eos>' is not in the vocabulary"):
        TextTokenizer.from_dir(tmp_path / "t")
    (tmp_path / "t" / "tokenizer_config.json").write_text("{bad")
    with pytest.raises(ValueError, match="tokenizer_config.json:1: malformed JSON"):
        TextTokenizer.from_dir(tmp_path / "t")


def test_sample_is_bos_prompt_target_eos(tokenizer):
    record = asr_record("a", 2, 3)
    data = SampleBuilder(tokenizer, 512).build([record], "d")
    tokens = data.sample(0).tolist()
    prompt = tokenizer.encode(get_task("asr").prompt(record) + PROMPT_SEPARATOR)
    target = tokenizer.encode(record.reference)
    assert tokens == [tokenizer.bos_id] + prompt + target + [tokenizer.eos_id]
    assert data.prompt_lengths[0] == 1 + len(prompt)
    assert data.stats.target_tokens == len(target) + 1 and data.stats.truncated == 0


def test_truncation_drops_hypotheses_then_cuts_input_never_the_target(tokenizer):
    fine = asr_record("fine", 1, 3)
    budget = len(SampleBuilder(tokenizer, 4096).build([fine], "d").sample(0)) + 40
    builder = SampleBuilder(tokenizer, budget)
    long_hyps = asr_record("hyps", 5, 12)  # too long with 5 hypotheses, fits with fewer
    one_huge = asr_record("cut", 1, 200)  # a single hypothesis that must be cut
    huge_target = asr_record("target", 2, 3, ref_words=400)  # target alone is too long
    data = builder.build([long_hyps, one_huge, huge_target, fine], "d")
    assert data.ids.tolist() == ["hyps", "cut", "fine"]
    assert data.lengths.max() <= budget
    assert data.stats.hypotheses_dropped == 1 and data.stats.inputs_cut == 1
    assert data.stats.too_long == ["target"]
    # the target of the shortened samples is intact
    for i, record in enumerate([long_hyps, one_huge]):
        target = tokenizer.encode(record.reference) + [tokenizer.eos_id]
        assert data.sample(i)[-len(target) :].tolist() == target
    text = tokenizer.decode(data.sample(0).tolist())
    assert "-best hypotheses" in text and "5-best" not in text


def test_tokenized_dataset_save_load(tokenizer, tmp_path):
    data = SampleBuilder(tokenizer, 64).build([asr_record("a", 2, 3), asr_record("b", 3, 40)], "d")
    data.save(tmp_path / "d.npz")
    loaded = TokenizedDataset.load(tmp_path / "d.npz")
    assert np.array_equal(loaded.tokens, data.tokens) and np.array_equal(
        loaded.offsets, data.offsets
    )
    assert loaded.ids.tolist() == data.ids.tolist() and loaded.stats == data.stats


def test_pack_sequence_boundaries_masks_and_task_ids():
    a = np.array([1, 10, 11, 12, 2])  # BOS, prompt 10 11, target 12, EOS -> prompt length 3
    b = np.array([1, 20, 21, 22, 23, 2])  # prompt length 2: 1, 20
    seq = pack_sequence([a, b], [3, 2], [4, 0], seq_length=14, pad_id=0)
    assert seq.input_ids.tolist() == [1, 10, 11, 12, 2, 1, 20, 21, 22, 23, 2, 0, 0, 0]
    # the padding is a pseudo-sample (positions from 0), as the THD layout's cu_seqlens say
    assert seq.position_ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert seq.task_ids.tolist() == [4] * 5 + [0] * 6 + [-1] * 3
    assert seq.segment_ids.tolist() == [0] * 5 + [1] * 6 + [-1] * 3
    # loss only where the next token is a target token or EOS of the same sample
    assert seq.loss_mask.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    learned = [(int(seq.input_ids[j]), int(seq.labels[j])) for j in np.flatnonzero(seq.loss_mask)]
    assert learned == [(11, 12), (12, 2), (20, 21), (21, 22), (22, 23), (23, 2)]
    assert seq.num_tokens == 11


def test_block_causal_mask_never_crosses_samples():
    seg = np.array([[0, 0, 0, 1, 1, -1]])
    mask = block_causal_mask(seg)[0, 0]  # True = blocked
    allowed = ~mask
    assert allowed[2].tolist() == [True, True, True, False, False, False]
    assert allowed[4].tolist() == [False, False, False, True, True, False]
    assert allowed[0].tolist() == [True, False, False, False, False, False]
    assert allowed[5].tolist() == [False, False, False, False, False, True]  # padding: itself only
    assert cu_seqlens(seg[0]).tolist() == [0, 3, 5, 6]


def test_plan_packing_fits_everything_once_and_densely():
    rng = np.random.default_rng(1)
    lengths = rng.integers(80, 400, size=3000)
    sequences = plan_packing(lengths, 2048, window=1024)
    placed = sorted(i for seq in sequences for i in seq)
    assert placed == list(range(3000))
    assert all(lengths[seq].sum() <= 2048 for seq in sequences)
    assert packing_efficiency(lengths, sequences, 2048) >= 0.97
    assert plan_packing(lengths, 2048, window=1024) == sequences, "packing must be deterministic"
    with pytest.raises(ValueError, match="sample 1 has 3000 tokens, more than seq_length=2048"):
        plan_packing(np.array([10, 3000]), 2048)
