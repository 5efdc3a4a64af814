"""The backend protocol and the option parsing every backend shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from nemo_neko.asr.nbest import NBest

SAMPLE_RATE = 16000
"""Every backend receives 16 kHz mono float32 audio in [-1, 1]."""

C = TypeVar("C")


@runtime_checkable
class Backend(Protocol):
    """A recogniser producing N-best lists.

    Attributes:
        method: short tag stored with every N-best list (``custom["nbest_method"]``), e.g.
            ``"canary-beam5"``, ``"canary-sample5-t0.3"``, ``"pocketsphinx-lattice"``.
    """

    method: str

    def describe(self) -> dict[str, Any]:
        """Everything that changes the output (model, method, sizes, prompt): JSON values."""
        ...

    def recognize(self, audio: Sequence[np.ndarray], seed: int) -> list[NBest]:
        """N-best candidates of each utterance, best first.

        Args:
            audio: one ``[samples]`` float32 array per utterance, 16 kHz mono, one batch.
            seed: seed for any randomness (sampling); the same batch and seed give the same
                output.

        Returns:
            One :class:`NBest` per input, in input order.
        """
        ...


def config_from_options(cls: type[C], options: dict[str, Any], backend: str) -> C:
    """Build config dataclass ``cls`` from ``options``; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(
            f"backend {backend!r}: unknown option(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(names))})"
        )
    return cls(**options)
