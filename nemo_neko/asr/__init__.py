"""ASR half of NeKo's training data: lhotse recipes and recogniser N-best lists as records.

Pipeline (see README.md in this folder)::

    corpus on disk --recipes--> lhotse CutSets (one utterance per cut)
        --generate (backend: canary | pocketsphinx, --shard i/N)--> cuts with
        supervision.custom["nbest"] (+ "nbest_scores")  +  asr correction records (JSONL)

Importing this package is cheap: torch, NeMo, lhotse and pocketsphinx are imported by the
functions that need them, with an install hint when absent.
"""

from __future__ import annotations

from nemo_neko.asr.nbest import DUPLICATE_POLICIES, NBest, finalize_nbest
from nemo_neko.asr.sharding import Shard, plan_batches

__all__ = ["DUPLICATE_POLICIES", "NBest", "Shard", "finalize_nbest", "plan_batches"]
