"""Recognisers that produce N-best lists, plugged in by registered name.

=================  ==========================================  ===================================
name               what                                        needs
=================  ==========================================  ===================================
``canary``         NeMo ``EncDecMultiTaskModel`` (Canary):     ``nemo_toolkit[asr]``; a GPU for
                   beam search, temperature sampling, or the   real corpora (bf16)
                   leaderboard's first pass (beam 1)
``pocketsphinx``   CMU PocketSphinx with the English model     ``pocketsphinx`` (CPU only)
                   its PyPI package ships: lattice N-best
=================  ==========================================  ===================================

A backend is built from its options dict (``build_backend("canary", {"model": ..., ...})``) and
implements :class:`~nemo_neko.asr.backends.base.Backend`. Modules are imported only when their
backend is built, so this registry imports neither torch, NeMo nor pocketsphinx.

Adding one: write ``backends/<name>.py`` with a config dataclass and a class implementing the
protocol (``recognize(audio, seed) -> list[NBest]``, ``describe()``, ``method``), then add a line
to :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from typing import Any

from nemo_neko.asr.backends.base import Backend

BACKENDS: dict[str, str] = {
    "canary": "nemo_neko.asr.backends.canary:CanaryBackend",
    "pocketsphinx": "nemo_neko.asr.backends.pocketsphinx:PocketSphinxBackend",
}
"""Backend name -> ``module:class`` (imported lazily)."""


def known_backends() -> list[str]:
    """Registered backend names."""
    return sorted(BACKENDS)


def backend_class(name: str) -> type:
    """The class registered as ``name`` (imports its module)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(known_backends())})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


CONFIGS: dict[str, str] = {
    "canary": "nemo_neko.asr.backends.canary:CanaryConfig",
    "pocketsphinx": "nemo_neko.asr.backends.pocketsphinx:PocketSphinxConfig",
}
"""Backend name -> ``module:class`` of its options dataclass (checked without loading a model)."""


def check_options(name: str, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` on an unknown backend, unknown option or invalid value, before any
    model is loaded (the options dataclass's own ``validate``)."""
    from nemo_neko.asr.backends.base import config_from_options

    backend_class(name)
    module, cls = CONFIGS[name].split(":")
    config = config_from_options(getattr(importlib.import_module(module), cls), options or {}, name)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()


def build_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """Build backend ``name`` from its options (the fields of its config dataclass)."""
    return backend_class(name).from_options(options or {})


__all__ = [
    "BACKENDS",
    "CONFIGS",
    "Backend",
    "backend_class",
    "build_backend",
    "check_options",
    "known_backends",
]
