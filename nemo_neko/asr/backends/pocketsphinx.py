"""CMU PocketSphinx N-best lists: a CPU first pass with the English model its PyPI package ships.

``pip install pocketsphinx`` (5.x) brings the US English acoustic model, a trigram language model
and the CMU pronouncing dictionary (``pocketsphinx.get_model_path()/en-us``), so the whole data
path (audio -> N-best -> records -> packed batches) runs with nothing downloaded. Per
utterance: ``start_utt`` / ``process_raw(full_utt=True)`` / ``end_utt``, then the first
``n * candidates_factor`` entries of ``Decoder.nbest()`` (A* over the word lattice, best path
first). Lattice paths that differ only in fillers or timing give the same text, so duplicates are
common: the duplicate policy (``keep`` or ``unique_pad``) decides what is stored. Scores are
natural logs of the path scores PocketSphinx reports (it returns them exponentiated, so long
utterances underflow: those are floored at ``ln(2.2e-308)`` = -708.4). An utterance with no hypothesis at all yields one
empty hypothesis (``[""]``). Deterministic and history-free: the feature extraction (cepstral
mean normalisation) is reset before every utterance, so an utterance gets the same N-best list
whatever was decoded before it, as resumed and sharded runs need; ``seed`` is unused.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nemo_neko.asr.backends.base import SAMPLE_RATE, config_from_options
from nemo_neko.asr.nbest import NBest

POCKETSPHINX_HINT = "the pocketsphinx backend needs PocketSphinx 5: pip install pocketsphinx"


@dataclass
class PocketSphinxConfig:
    """Options of the ``pocketsphinx`` backend."""

    n: int = 5
    """Hypotheses wanted per utterance (the duplicate policy makes the final list)."""
    candidates_factor: int = 4
    """Lattice paths read per utterance: ``n * candidates_factor`` (room for duplicates)."""
    hmm: str | None = None
    """Acoustic model folder (default: the bundled en-us model)."""
    lm: str | None = None
    """Language model (default: the bundled en-us trigram)."""
    dictionary: str | None = None
    """Pronouncing dictionary (PocketSphinx's ``dict``; default: the bundled CMU dictionary)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further PocketSphinx options (``{"beam": 1e-60}``...)."""

    def validate(self) -> None:
        if self.n < 1 or self.candidates_factor < 1:
            raise ValueError(
                f"n and candidates_factor must be >= 1, got {self.n}, {self.candidates_factor}"
            )


class PocketSphinxBackend:
    """PocketSphinx N-best lists (see the module docstring)."""

    method = "pocketsphinx-lattice"

    def __init__(self, config: PocketSphinxConfig):
        config.validate()
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise ImportError(POCKETSPHINX_HINT) from err
        self.config = config
        kwargs: dict[str, Any] = {"samprate": SAMPLE_RATE, "logfn": "/dev/null"}
        for key, name in (("hmm", "hmm"), ("lm", "lm"), ("dict", "dictionary")):
            if getattr(config, name) is not None:
                kwargs[key] = getattr(config, name)
        kwargs.update(config.options)
        self.decoder = Decoder(**kwargs)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PocketSphinxBackend:
        return cls(config_from_options(PocketSphinxConfig, options, "pocketsphinx"))

    def describe(self) -> dict[str, Any]:
        import pocketsphinx

        out = asdict(self.config)
        out.update(backend="pocketsphinx", version=getattr(pocketsphinx, "__version__", "?"))
        return out

    def recognize_one(self, audio: np.ndarray) -> NBest:
        """N-best candidates of one utterance (16 kHz float32 in [-1, 1])."""
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
        decoder = self.decoder
        decoder.reinit_feat()  # forget the previous utterance's normalisation statistics
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        best = decoder.hyp()
        if best is None:
            return NBest.of([""])
        limit = self.config.n * self.config.candidates_factor
        paths = list(itertools.islice(decoder.nbest(), limit))
        if not paths:
            return NBest.of([best.hypstr], [_log(best.score)])
        return NBest.of([p.hypstr for p in paths], [_log(p.score) for p in paths])

    def recognize(self, audio: Sequence[np.ndarray], seed: int) -> list[NBest]:
        """N-best lists of one batch, utterance by utterance (see :class:`Backend`)."""
        del seed  # deterministic decoder
        return [self.recognize_one(a) for a in audio]


def _log(score: float) -> float:
    """Natural log of an exponentiated PocketSphinx score, floored where it underflowed."""
    return math.log(max(float(score), sys.float_info.min))
