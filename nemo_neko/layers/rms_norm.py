"""RMSNorm for Megatron's local spec, with what its torch norm refuses.

Megatron-Core's local (non-Transformer-Engine) norm, ``WrappedTorchNorm``, asserts against
``layernorm_zero_centered_gamma`` (Gemma's RMSNorm scales by ``1 + w``) and against
``sequence_parallel``. Neither needs anything special: the norm acts token by token, so under
sequence parallelism each tensor-parallel rank normalises its own tokens and the weight's
gradient is all-reduced over the TP group, which Megatron's DDP does for parameters marked
``sequence_parallel``. This module does both, and nothing else.
"""

from __future__ import annotations

import torch


class RMSNorm(torch.nn.Module):
    """``y = x / rms(x) * g``, with ``g = 1 + weight`` when ``zero_centered_gamma`` (Gemma).

    Args:
        config: Megatron ``TransformerConfig`` (``layernorm_zero_centered_gamma``,
            ``sequence_parallel``, ``params_dtype``).
        hidden_size: size of the normalised (last) dimension.
        eps: added to the mean square.

    Shapes: input ``[..., hidden]`` -> output ``[..., hidden]``, in the input's dtype; the
    statistics are computed in fp32.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **kwargs):
        super().__init__()
        self.eps = eps
        self.hidden_size = hidden_size
        self.zero_centered_gamma = bool(getattr(config, "layernorm_zero_centered_gamma", False))
        init = torch.zeros if self.zero_centered_gamma else torch.ones
        self.weight = torch.nn.Parameter(init(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = bool(getattr(config, "sequence_parallel", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = self.weight.float() + 1.0 if self.zero_centered_gamma else self.weight.float()
        normed = torch.nn.functional.rms_norm(x.float(), (self.hidden_size,), gain, self.eps)
        return normed.to(x.dtype)
