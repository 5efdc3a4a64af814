"""The model factory: a ``ModelConfig`` becomes the Megatron-Core GPTModel chunks of this rank.

One sequence, used by training, correction and conversion alike (Megatron-Bridge's
``GPTModelProvider.provide()`` is the model)::

    routing = run.routing.resolve([s.name for s in run.data.train], run.model.num_experts)
    neko = run.model.build(routing=routing, parallel=ctx, tokenizer_vocab=tokenizer.vocab_size,
                           max_sequence_length=run.data.seq_length)
    neko.chunks        # [GPTModel] (one per virtual pipeline stage)

Vocabulary padding (Megatron's rule, ``make_vocab_size_divisible_by x TP``), the
``TransformerConfig`` (:mod:`nemo_neko.model.transformer_config`), the block spec (NeKo MoE layers,
or dense layers for a model with ``num_experts = 0``), pipeline stages from the
:class:`~nemo_neko.parallel.ParallelContext`, Gemma's embedding scaling and the move to the device
all happen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nemo_neko.model.config import ModelConfig, TransformerImpl
from nemo_neko.model.output_positions import select_output_positions
from nemo_neko.model.transformer_config import transformer_config


@dataclass
class NeKoModel:
    """What :func:`build_model` returns.

    Attributes:
        chunks: the GPTModel chunks this pipeline rank holds (one, or ``virtual_pipeline``).
        config: their Megatron ``TransformerConfig``.
        vocab_size: the padded vocabulary size of the embeddings and the output layer.
        routing: the task routing the NeKo routers use (``TaskRoutingConfig``).
        use_te: whether the layers are Transformer Engine's (packed batches then use the THD
            layout, ``cu_seqlens``; local layers take the block-diagonal causal mask).
    """

    chunks: list
    config: Any
    vocab_size: int
    routing: Any
    use_te: bool


def build_model(
    model: ModelConfig,
    *,
    routing,
    parallel,
    max_sequence_length: int,
    tokenizer_vocab: int | None = None,
    vocab_size: int | None = None,
    use_te: bool | None = None,
    device: torch.device | str | None = None,
    **config_overrides,
) -> NeKoModel:
    """Build the model chunks of this pipeline rank.

    Args:
        model: the model description.
        routing: ``TaskRoutingConfig`` (resolved) for the NeKo routers; unused by a dense model.
        parallel: this process's :class:`~nemo_neko.parallel.ParallelContext` (its layout is
            the one the model is split by; ``model.parallel`` is only the config's default).
        max_sequence_length: longest sequence the position embeddings must cover.
        tokenizer_vocab: the tokenizer's vocabulary size when ``model.vocab_size`` is unset.
        vocab_size: the padded vocabulary to build with, as it is (a conversion pads for the
            target layout itself); None: ``model.vocab_size`` or ``tokenizer_vocab``, padded.
        use_te: Transformer Engine layers (None = where they run); ``model.transformer_impl``
            ``local`` / ``transformer_engine`` overrides it.
        device: where the parameters go (None: CUDA when available, else where they were built).
        config_overrides: ``TransformerConfig`` fields (e.g. ``perform_initialization=False``).
    """
    from nemo_neko.compat import megatron as mc

    layout = parallel.layout
    impl = TransformerImpl(model.transformer_impl)
    if impl is not TransformerImpl.auto:
        use_te = impl.use_te()
    te_layers = use_te if use_te is not None else mc.transformer_engine_available()
    if "layernorm" in (model.recompute_modules or []) and not te_layers:
        raise ValueError(
            "model.recompute_modules 'layernorm' needs Transformer Engine layers (Megatron "
            "recomputes only TE's norms); drop it, or use model.transformer_impl=transformer_engine"
        )
    if vocab_size is None:
        vocab_size = model.padded_vocab_size(tokenizer_vocab, tensor_parallel=layout.tensor)
    config = transformer_config(model, layout, **config_overrides)
    chunks = []
    vp_size = layout.virtual_pipeline
    for vp_stage in range(vp_size or 1):
        stage = vp_stage if vp_size else None
        first, last = parallel.is_first_stage(stage), parallel.is_last_stage(stage)
        gpt = mc.GPTModel(
            config=config,
            transformer_layer_spec=block_spec(model, config, routing, use_te, stage),
            vocab_size=vocab_size,
            max_sequence_length=max_sequence_length,
            pre_process=first,
            post_process=last,
            share_embeddings_and_output_weights=model.share_embeddings_and_output_weights,
            position_embedding_type="rope",
            rotary_base=int(model.rotary_base),
            vp_stage=stage,
        )
        if model.embedding_multiplier and first:
            _scale_embeddings(gpt, model.embedding_multiplier)
        select_output_positions(gpt)
        chunks.append(gpt)
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if device is not None:
        chunks = [chunk.to(device) for chunk in chunks]
    uses_te = any("TE" in type(m).__name__ for chunk in chunks for m in chunk.modules())
    return NeKoModel(chunks, config, vocab_size, routing, uses_te)


def block_spec(model: ModelConfig, config, routing, use_te: bool | None, vp_stage: int | None):
    """The decoder block spec: NeKo MoE layers (honouring ``moe_layer_freq``), or dense layers."""
    from nemo_neko.moe.spec import dense_decoder_block_spec, neko_decoder_block_spec

    attention = str(model.local_attention)
    if model.num_experts:
        return neko_decoder_block_spec(
            config,
            routing,
            use_te=use_te,
            vp_stage=vp_stage,
            local_attention=attention,
            local_experts=str(model.local_experts),
        )
    return dense_decoder_block_spec(
        config, use_te=use_te, vp_stage=vp_stage, local_attention=attention
    )


def _scale_embeddings(gpt, multiplier: float) -> None:
    """Multiply the word embeddings' output by ``multiplier`` (Gemma's sqrt(hidden) scaling)."""

    def scale(module, inputs, output):
        return output * multiplier

    gpt.embedding.word_embeddings.register_forward_hook(scale)
