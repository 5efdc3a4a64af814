"""The pocketsphinx backend: real recognition of espeak-ng speech with the bundled English model."""

import sys

import numpy as np
import pytest

from nemo_neko.asr.nbest import finalize_nbest
from tests.asr._tools import need


@pytest.fixture(scope="module")
def sphinx():
    need("pocketsphinx")
    from nemo_neko.asr.backends import build_backend

    return build_backend("pocketsphinx", {"n": 5})


def test_recognises_synthesised_speech(sphinx, utterances):
    import jiwer

    texts, audio = utterances
    out = sphinx.recognize(audio, seed=0)
    best = [nb.texts[0] for nb in out]
    wer = jiwer.wer(texts, best)
    shuffled = jiwer.wer(texts[1:] + texts[:1], best)
    assert wer < 0.75, (wer, best)  # loose: espeak-ng voices, a small CPU model
    assert wer < shuffled - 0.2  # the output follows the audio, not chance
    for nbest in out:
        assert len(nbest.texts) >= 1 and len(nbest.scores) == len(nbest.texts)
        assert all(np.isfinite(nbest.scores)) and all(s <= 0 for s in nbest.scores)  # log scores
    assert sphinx.recognize(audio, seed=1) == out  # deterministic


def test_nbest_count_under_both_policies(sphinx, utterances):
    _, audio = utterances
    for nbest in sphinx.recognize(audio, seed=0):
        padded = finalize_nbest(nbest, 5, "unique_pad")
        assert len(padded.texts) == 5
        unique = list(dict.fromkeys(padded.texts))
        assert padded.texts[: len(unique)] == tuple(unique)
        kept = finalize_nbest(nbest, 5, "keep")
        assert 1 <= len(kept.texts) <= 5 and kept.texts == nbest.texts[:5]


def test_silence_gives_one_empty_or_some_hypothesis(sphinx):
    out = sphinx.recognize([np.zeros(16000, dtype=np.float32)], seed=0)
    assert len(out) == 1 and len(out[0].texts) >= 1


def test_missing_pocketsphinx_has_an_install_hint(monkeypatch):
    from nemo_neko.asr.backends import build_backend

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(ImportError, match="pip install pocketsphinx"):
        build_backend("pocketsphinx", {})
