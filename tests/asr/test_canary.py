"""The canary backend on a tiny random-weight Canary: .nemo round trip, the real transcribe()
path for beam search and the leaderboard first pass, NeMo 3.0's multi-sample bug and our fix.

Random weights make the text garbage: the checks are counts, order, scores, determinism and
that samples are real, separate draws."""

import numpy as np
import pytest

from nemo_neko.asr.nbest import finalize_nbest
from tests.asr._tools import need


def _backend(model, **options):
    from nemo_neko.asr.backends.canary import CanaryBackend, CanaryConfig

    return CanaryBackend(CanaryConfig(model="tiny", device="cpu", **options), model=model)


def test_tiny_canary_is_canary_and_restores_from_nemo(tiny_canary, canary_model):
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from nemo.collections.asr.modules import ConformerEncoder
    from nemo.collections.common.tokenizers import AggregateTokenizer

    assert tiny_canary.suffix == ".nemo" and tiny_canary.stat().st_size > 0
    assert isinstance(canary_model, EncDecMultiTaskModel)
    assert isinstance(canary_model.encoder, ConformerEncoder)
    assert canary_model.encoder.subsampling_factor == 8  # FastConformer
    assert isinstance(canary_model.tokenizer, AggregateTokenizer)
    assert set(canary_model.tokenizer.langs) == {"spl_tokens", "en"}
    assert canary_model.tokenizer.vocab_size % 8 == 0
    ids = canary_model.tokenizer.text_to_ids("the weather is nice today", "en")
    assert canary_model.tokenizer.ids_to_text(ids).strip() == "the weather is nice today"


def test_beam_search_returns_n_best_with_scores(canary_model, utterances):
    _, audio = utterances
    backend = _backend(canary_model, method="beam", n=5)
    assert backend.method == "canary-beam5"
    out = backend.recognize(audio, seed=0)
    assert len(out) == len(audio)
    for nbest in out:
        assert len(nbest.texts) == 5 and len(nbest.scores) == 5
        assert list(nbest.scores) == sorted(nbest.scores, reverse=True)  # best first
        assert all(np.isfinite(nbest.scores))
    assert backend.recognize(audio, seed=1) == out  # beam search: deterministic
    # a wider beam gives more candidates; the stored list keeps n (room for unique_pad)
    wider = _backend(canary_model, method="beam", n=3, beam_size=4).recognize(audio[:2], seed=0)
    assert [len(nb.texts) for nb in wider] == [4, 4]
    assert [len(finalize_nbest(nb, 3).texts) for nb in wider] == [3, 3]


def test_first_pass_is_the_single_best_beam(canary_model, utterances):
    _, audio = utterances
    first = _backend(canary_model, method="first_pass").recognize(audio, seed=0)
    assert all(len(nb.texts) == 1 and len(nb.scores) == 1 for nb in first)
    beam1 = _backend(canary_model, method="beam", n=1, beam_size=1).recognize(audio, seed=0)
    assert [nb.texts for nb in first] == [nb.texts for nb in beam1]


def test_stock_nemo_multisample_transcribe_fails(canary_model, utterances):
    """Documents the NeMo 3.0 bug the workaround exists for; if this starts failing, NeMo fixed
    it and canary_sampling can go."""
    from omegaconf import open_dict

    from nemo_neko.asr.backends.canary import set_decoding
    from nemo_neko.asr.backends.canary_sampling import stock_bug_message

    _, audio = utterances
    set_decoding(canary_model, "beam", 1, 1, 1.0)  # reset, then the stock sampling set-up:
    cfg = canary_model.cfg.decoding.copy()
    with open_dict(cfg):
        cfg.strategy = "greedy_batch"
        cfg.greedy.temperature = 0.3
        cfg.greedy.n_samples = 5
    canary_model.change_decoding_strategy(cfg)
    with pytest.raises(AssertionError, match=stock_bug_message):
        canary_model.transcribe(audio[:3], batch_size=3, verbose=False)


def test_multisample_workaround_draws_n_separate_samples(canary_model, utterances):
    _, audio = utterances
    hot = _backend(canary_model, method="sample", n=5, temperature=2.0)
    assert hot.method == "canary-sample5-t2"
    out = hot.recognize(audio, seed=7)
    assert len(out) == len(audio)
    for nbest in out:
        assert len(nbest.texts) == 5 and nbest.scores is None  # sampling gives no scores
        assert len(set(nbest.texts)) == 5  # five separate draws, not one sample repeated
    assert hot.recognize(audio, seed=7) == out  # reproducible under a seed
    assert hot.recognize(audio, seed=8) != out


def test_multisample_at_zero_temperature_is_greedy_for_each_utterance(canary_model, utterances):
    """Samples belong to the right utterance and lose exactly the prompt: with the temperature
    near zero every sample equals that utterance's greedy transcript."""
    from nemo_neko.asr.backends.canary import set_decoding

    _, audio = utterances
    cold = _backend(canary_model, method="sample", n=3, temperature=1e-6).recognize(audio, seed=0)
    set_decoding(canary_model, "beam", 1, 1, 1.0)
    from omegaconf import open_dict

    cfg = canary_model.cfg.decoding.copy()
    with open_dict(cfg):
        cfg.strategy = "greedy_batch"
        cfg.greedy.temperature = None
        cfg.greedy.n_samples = 1
    canary_model.change_decoding_strategy(cfg)
    greedy = canary_model.transcribe(audio, batch_size=len(audio), verbose=False, pnc="no")
    for nbest, hyp in zip(cold, greedy):
        assert nbest.texts == (" ".join(hyp.text.split()),) * 3


def test_backends_sharing_a_model_keep_their_own_decoding(canary_model, utterances):
    _, audio = utterances
    beam = _backend(canary_model, method="beam", n=5)
    sample = _backend(canary_model, method="sample", n=5, temperature=2.0)
    first = beam.recognize(audio[:2], seed=0)
    assert sample.recognize(audio[:2], seed=0)[0].scores is None
    assert beam.recognize(audio[:2], seed=0) == first  # beam decoding restored


def test_canary_config_errors():
    need("nemo.collections.asr")
    from nemo_neko.asr.backends import build_backend
    from nemo_neko.asr.backends.canary import CanaryConfig

    with pytest.raises(ValueError, match="method must be one of beam, sample, first_pass"):
        CanaryConfig(method="greedy").validate()
    with pytest.raises(ValueError, match="first_pass is the leaderboard's pass, with pnc='no'"):
        CanaryConfig(method="first_pass", pnc="yes").validate()
    with pytest.raises(ValueError, match="beam_size=3 is smaller than n=5"):
        CanaryConfig(beam_size=3).validate()
    with pytest.raises(ValueError, match="unknown option.*modle"):
        build_backend("canary", {"modle": "x.nemo"})


@pytest.mark.gpu
def test_canary_bf16_on_gpu(tiny_canary, utterances):
    import torch

    from nemo_neko.asr.backends import build_backend

    _, audio = utterances
    backend = build_backend("canary", {"model": str(tiny_canary), "method": "beam", "n": 5})
    assert backend.device.type == "cuda" and backend.dtype == torch.bfloat16
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    out = backend.recognize(audio, seed=0)
    assert [len(nb.texts) for nb in out] == [5] * len(audio)
    sampled = build_backend(
        "canary", {"model": str(tiny_canary), "method": "sample", "n": 5}
    ).recognize(audio, seed=0)
    assert [len(nb.texts) for nb in sampled] == [5] * len(audio)
