"""Parallelism: the layout (pure, checked before anything starts), process-group setup, and the
:class:`ParallelContext` every component takes instead of reading Megatron's globals.

``ParallelLayout`` and ``LayoutError`` import without torch; the rest loads on first use.
"""

import importlib

from nemo_neko.parallel.layout import LayoutError, ParallelLayout

_LAZY = {
    "ParallelContext": "nemo_neko.parallel.context",
    "barrier": "nemo_neko.parallel.context",
    "global_rank": "nemo_neko.parallel.context",
    "destroy_parallel": "nemo_neko.parallel.setup",
    "free_port": "nemo_neko.parallel.setup",
    "initialize_parallel": "nemo_neko.parallel.setup",
    "seed_everything": "nemo_neko.parallel.setup",
}

__all__ = [
    "LayoutError",
    "ParallelContext",
    "ParallelLayout",
    "barrier",
    "destroy_parallel",
    "free_port",
    "global_rank",
    "initialize_parallel",
    "seed_everything",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'nemo_neko.parallel' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
