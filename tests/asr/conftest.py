"""Fixtures of the ASR data tests: synthesised speech, a LibriSpeech-layout corpus, a tiny Canary.

The optional tools (lhotse, NeMo, pocketsphinx, the espeak-ng program) are skipped when absent,
so the main test venv collects these tests cleanly; with ``NEKO_REQUIRE_ASR_TOOLS=1`` (what
``.ci/run`` sets for the ASR venv) a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import pytest

from tests.asr._tools import need, need_speech


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
    """A synthesised LibriSpeech-layout corpus: train-clean-100 (10 utts), test-clean (2)."""
    need("lhotse")
    need_speech()
    from nemo_neko.asr.synth import write_librispeech_corpus

    root = tmp_path_factory.mktemp("speech")
    return write_librispeech_corpus(root, {"train-clean-100": 10, "test-clean": 2})


@pytest.fixture(scope="session")
def manifests(speech_corpus, tmp_path_factory):
    """Cut manifests of the synthesised corpus, made by lhotse's real prepare_librispeech."""
    from nemo_neko.asr.recipes.librispeech import prepare_librispeech

    return prepare_librispeech(speech_corpus, tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="session")
def tiny_canary(tmp_path_factory):
    """Path of a tiny random-weight Canary saved as .nemo."""
    need("nemo.collections.asr")
    import torch

    # tiny matrices on a shared 2-core machine: one thread is many times faster than two
    torch.set_num_threads(1)
    from nemo_neko.asr.tiny_canary import save_tiny_canary

    return save_tiny_canary(tmp_path_factory.mktemp("canary") / "tiny_canary.nemo")


@pytest.fixture(scope="session")
def canary_model(tiny_canary):
    """The tiny Canary restored from its .nemo file (shared; tests reconfigure decoding)."""
    from nemo_neko.asr.backends.canary import load_canary

    return load_canary(str(tiny_canary), "cpu")


@pytest.fixture(scope="session")
def utterances(speech_corpus):
    """Four synthesised utterances, 16 kHz float32, with their texts."""
    from nemo_neko.asr.synth import SENTENCES, VOICES, synthesize

    texts = list(SENTENCES[:4])
    return texts, [synthesize(t, voice=VOICES[i % 2]) for i, t in enumerate(texts)]
