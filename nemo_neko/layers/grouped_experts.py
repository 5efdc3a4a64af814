"""``GroupedSequentialMLP``: Megatron's ``SequentialMLP`` experts computed by grouped GEMMs.

Same parameters, same checkpoints (the experts stay ``local_experts.<i>.linear_fc1/fc2``, so
``sharded_state_dict`` and every conversion are Megatron's own), and the same arithmetic as
``SequentialMLP`` -> ``MLP``: ``fc1``, the (gated) activation, the router probability per token,
``fc2``. Only the loop over experts is gone: the tokens, already permuted expert-major by the
dispatcher, go through two :func:`torch.nn.functional.grouped_mm` calls whose groups are the
experts' token counts (empty experts included).

The grouped path runs where ``grouped_mm`` does (CPU; CUDA with bf16 on compute capability >= 9)
and for what it covers (no biases, no FP8/FP4, expert tensor parallelism of 1, probabilities
applied after the activation); anything else falls back to ``SequentialMLP.forward``.

Shapes: N permuted tokens, H hidden, F expert FFN (2F for the gated fc1), L local experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nemo_neko.compat.megatron import SequentialMLP


def grouped_mm_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`torch.nn.functional.grouped_mm` runs for these tensors."""
    if not hasattr(F, "grouped_mm"):
        return False
    if device.type == "cpu":
        return True
    return (
        device.type == "cuda"
        and dtype == torch.bfloat16
        and torch.cuda.get_device_capability(device)[0] >= 9
    )


class GroupedSequentialMLP(SequentialMLP):
    """``SequentialMLP`` whose forward runs the experts as grouped GEMMs (see the module)."""

    def _groups_cover(self, hidden_NH: torch.Tensor) -> bool:
        config = self.config
        expert = self.local_experts[0] if len(self.local_experts) else None
        return (
            len(self.local_experts) > 1
            and not (config.fp8 or getattr(config, "fp4", None))
            and not config.add_bias_linear
            and not config.bias_activation_fusion
            and not getattr(config, "use_te_activation_func", False)
            and not config.moe_apply_probs_on_input
            and self.tp_group.size() == 1
            and expert is not None
            and grouped_mm_available(hidden_NH.device, hidden_NH.dtype)
        )

    def forward(
        self,
        permuted_local_hidden_states: torch.Tensor,
        tokens_per_expert: torch.Tensor,
        permuted_probs: torch.Tensor,
    ):
        """``[N, H]`` tokens grouped by expert, ``[L]`` counts, ``[N]`` probabilities ->
        ``([N, H] output, None)``."""
        hidden_NH = permuted_local_hidden_states
        if not self._groups_cover(hidden_NH):
            return super().forward(hidden_NH, tokens_per_expert, permuted_probs)
        counts_L = torch.as_tensor(tokens_per_expert, device=hidden_NH.device)
        offsets_L = counts_L.cumsum(0).to(torch.int32)
        fc1_LHF, fc2_LFH = self._stacked_weights()
        inter_NF = F.grouped_mm(hidden_NH, fc1_LHF, offs=offsets_L)
        inter_NF = self._activation(inter_NF)
        dtype = inter_NF.dtype
        inter_NF = (inter_NF * permuted_probs.unsqueeze(-1)).to(dtype)
        return F.grouped_mm(inter_NF, fc2_LFH, offs=offsets_L), None

    def _stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The experts' weights as ``[L, H, F]`` and ``[L, F, H]`` views for grouped GEMMs.

        With gradients to compute they are stacked every forward (autograd hands each expert
        its gradient). Without (eval mode, generation, frozen experts), the stacks are kept
        until a weight changes (its storage or its in-place version counter), so that a decode
        step, which routes a handful of tokens, does not copy every expert's weights again.
        """
        weights = [(e.linear_fc1.weight, e.linear_fc2.weight) for e in self.local_experts]
        needs_grad = torch.is_grad_enabled() and any(
            w.requires_grad for pair in weights for w in pair
        )
        if not needs_grad:
            key = tuple((w.data_ptr(), w._version) for pair in weights for w in pair)
            cached = getattr(self, "_stacked_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        with torch.set_grad_enabled(needs_grad):
            fc1_LHF = torch.stack([fc1 for fc1, _ in weights]).transpose(1, 2)
            fc2_LFH = torch.stack([fc2 for _, fc2 in weights]).transpose(1, 2)
        if not needs_grad:
            self._stacked_cache = (key, (fc1_LHF, fc2_LFH))
        return fc1_LHF, fc2_LFH

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        """Megatron's unfused (gated) activation, as ``MLP.forward`` computes it."""
        config = self.config
        if not config.gated_linear_unit:
            return config.activation_func(x)
        x_glu, x_linear = torch.chunk(x, 2, dim=-1)
        clamp = getattr(config, "activation_func_clamp_value", None)
        if clamp is not None:
            x_glu = x_glu.clamp(min=None, max=clamp)
            x_linear = x_linear.clamp(min=-clamp, max=clamp)
        return config.activation_func(x_glu) * (
            x_linear + getattr(config, "glu_linear_offset", 0.0)
        )
