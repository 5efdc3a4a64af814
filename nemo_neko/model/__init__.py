"""The NeKo model: its typed description, the Megatron translation, the factory, checkpoints.

``ModelConfig`` (and its enums) import without torch; the factory and checkpoints load Megatron
when used. Training (``nemo_neko.train``), correction (``nemo_neko.inference``) and conversion
(``nemo_neko.convert``) all build the model through :meth:`ModelConfig.build`.
"""

from nemo_neko.model.config import (
    Activation,
    Dispatcher,
    LoadBalancing,
    LocalAttention,
    LocalExperts,
    ModelConfig,
    Normalization,
    ParamsDtype,
    RecomputeGranularity,
    ScoreFunction,
    TransformerImpl,
)

__all__ = [
    "Activation",
    "Dispatcher",
    "LoadBalancing",
    "LocalAttention",
    "LocalExperts",
    "ModelConfig",
    "Normalization",
    "ParamsDtype",
    "RecomputeGranularity",
    "ScoreFunction",
    "TransformerImpl",
]
