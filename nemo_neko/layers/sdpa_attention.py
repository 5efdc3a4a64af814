"""``SDPAttention``: core attention for Megatron's local spec on PyTorch's fused SDPA.

A drop-in for Megatron-Core's ``DotProductAttention`` (same constructor, same forward signature,
same layouts) that runs :func:`torch.nn.functional.scaled_dot_product_attention` instead of the
unfused ``baddbmm -> masked softmax -> bmm`` sequence: no ``[b, np, sq, sk]`` score tensor is
materialised by the fused CPU / GPU kernels, grouped-query attention runs without repeating the
key/value heads (``enable_gqa``), and the softmax is computed in fp32 inside the kernel.

Masks follow Megatron's conventions:

* ``attention_mask`` ``[b, 1, sq, sk]`` bool, True = masked (a block-diagonal causal mask, or
  padding): passed to SDPA as its complement (True = attend);
* no mask and a causal ``attn_mask_type`` with ``sq > 1``: SDPA's ``is_causal`` (``sq == sk``);
* ``sq == 1`` (a decode step with the KV cache) or ``no_mask``: no mask.

Packed batches come with their block-diagonal causal mask (on CPU the fused kernel with that
mask costs what a purely causal one does; Megatron's THD layout would add a per-sample RoPE loop).

Shapes: query ``[sq, b, np, hn]``, key / value ``[sk, b, ng, hn]``; returns ``[sq, b, np * hn]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nemo_neko.compat.megatron import AttnMaskType, MegatronModule, tensor_parallel


class SDPAttention(MegatronModule):
    """Megatron-compatible core attention on ``scaled_dot_product_attention``.

    Args (as ``DotProductAttention``):
        config: the ``TransformerConfig``.
        layer_number: 1-based layer number (query-key layer scaling).
        attn_mask_type: ``AttnMaskType`` of the layer.
        attention_type: unused (self attention only).
        attention_dropout: overrides ``config.attention_dropout``.
        softmax_scale: overrides ``1 / sqrt(head_dim)``.
        cp_comm_type: must be None (context parallelism needs Transformer Engine).
        pg_collection: process groups (its ``tp`` divides the heads).
    """

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
        **kwargs,
    ):
        super().__init__(config=config)
        unsupported = {
            "context_parallel_size > 1": config.context_parallel_size > 1,
            "window_size (sliding windows)": getattr(config, "window_size", None) is not None,
            f"softmax_type={getattr(config, 'softmax_type', 'vanilla')!r}": (
                getattr(config, "softmax_type", "vanilla") != "vanilla"
            ),
        }
        refused = [name for name, present in unsupported.items() if present]
        if refused:
            raise ValueError(
                f"model.local_attention=sdpa does not support {', '.join(refused)}; set "
                "model.local_attention=megatron"
            )
        tp_size = pg_collection.tp.size() if pg_collection is not None else 1
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.heads_per_partition = config.num_attention_heads // tp_size
        self.groups_per_partition = config.num_query_groups // tp_size
        # (query-key layer scaling divides the scale by the layer number and multiplies the
        # scores back inside the softmax: the product is this scale, which SDPA applies once)
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(config.kv_channels)
        self.dropout_p = (
            config.attention_dropout if attention_dropout is None else attention_dropout
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type=None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        """``[sq, b, np, hn]`` x ``[sk, b, ng, hn]`` -> ``[sq, b, np * hn]`` (see the module)."""
        if attention_bias is not None:
            raise ValueError("attention bias is not supported by SDPAttention")
        if packed_seq_params is not None:
            raise ValueError("packed (THD) batches need Transformer Engine attention")
        sq, batch = query.shape[0], query.shape[1]
        q_BNSD = query.permute(1, 2, 0, 3)
        k_BGSD = key.permute(1, 2, 0, 3)
        v_BGSD = value.permute(1, 2, 0, 3)
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        mask, causal = None, False
        if attention_mask is not None:
            mask = ~attention_mask
        elif mask_type == AttnMaskType.causal and sq > 1:
            causal = True
        dropout = self.dropout_p if self.training else 0.0
        if dropout and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                out_BNSD = self._sdpa(q_BNSD, k_BGSD, v_BGSD, mask, causal, dropout)
        else:
            out_BNSD = self._sdpa(q_BNSD, k_BGSD, v_BGSD, mask, causal, dropout)
        return out_BNSD.permute(2, 0, 1, 3).reshape(sq, batch, -1)

    def _sdpa(self, q, k, v, mask, causal: bool, dropout: float) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=self.heads_per_partition != self.groups_per_partition,
        )
