"""State-dict adapters, one per Hugging Face architecture (see README.md).

Each adapter maps a Hugging Face ``config.json`` to a :class:`~nemo_neko.model.config.ModelConfig`
and back, and every Megatron parameter to the Hugging Face tensor rows it is made of
(:mod:`nemo_neko.convert.mapping`). Adding an architecture = one module with a
:class:`StateDictAdapter` subclass, registered below.
"""

from __future__ import annotations

from nemo_neko.convert.adapters.base import ConversionError, StateDictAdapter
from nemo_neko.convert.adapters.gemma import GemmaAdapter
from nemo_neko.convert.adapters.mistral import LlamaAdapter, MistralAdapter
from nemo_neko.convert.adapters.mixtral import GemmaMoeAsMixtralAdapter, MixtralAdapter
from nemo_neko.convert.adapters.qwen2_moe import Qwen2MoeAdapter
from nemo_neko.model.config import ModelConfig

ADAPTERS: dict[str, type[StateDictAdapter]] = {
    "mixtral": MixtralAdapter,
    "qwen2_moe": Qwen2MoeAdapter,
    "gemma": GemmaAdapter,
    "mistral": MistralAdapter,
    "llama": LlamaAdapter,
}
"""Importable architectures by Hugging Face ``model_type``."""

EXPORT_ORDER: tuple[type[StateDictAdapter], ...] = (
    MixtralAdapter,
    Qwen2MoeAdapter,
    GemmaMoeAsMixtralAdapter,
    GemmaAdapter,
    MistralAdapter,
)
"""Formats tried, in order, for a model exported without a known source architecture."""


def adapter_for_hf(config: dict) -> StateDictAdapter:
    """The adapter of a Hugging Face ``config.json`` (by ``model_type``)."""
    model_type = config.get("model_type")
    if model_type not in ADAPTERS:
        raise ConversionError(
            f"architecture {model_type!r} ({config.get('architectures')}) is not supported; "
            f"supported model_type values: {sorted(ADAPTERS)}"
        )
    return ADAPTERS[model_type]()


def adapter_for_model(model: ModelConfig, prefer: str | None = None) -> StateDictAdapter:
    """An adapter that writes ``model`` exactly: ``prefer`` (a ``model_type``, e.g. the source
    checkpoint's) when it fits, else the first of :data:`EXPORT_ORDER` that does."""
    if prefer in ADAPTERS and ADAPTERS[prefer]().matches(model):
        return ADAPTERS[prefer]()
    for cls in EXPORT_ORDER:
        if cls().matches(model):
            return cls()
    raise ConversionError(
        f"no Hugging Face architecture holds model {model.name!r} exactly (experts="
        f"{model.num_experts}, shared expert={model.moe_shared_expert_intermediate_size}, "
        f"pre-softmax routing={model.moe_router_pre_softmax}, activation={model.activation})"
    )


__all__ = [
    "ADAPTERS",
    "ConversionError",
    "StateDictAdapter",
    "adapter_for_hf",
    "adapter_for_model",
]
