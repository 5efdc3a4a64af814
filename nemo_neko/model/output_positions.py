"""Logits only where the loss needs them: the output layer on the selected positions alone.

NeKo's loss is the next-token NLL on the target tokens (and, optionally, a weighted one on the
prompt); the prompt's logits are otherwise computed and thrown away. Inside
:func:`output_positions_scope` the output layer of a model prepared by
:func:`select_output_positions` (the model factory prepares every last-stage chunk) sees only the
hidden states of the selected positions, as an ``[n, 1, h]`` "sequence": with labels given as
``[1, n]`` Megatron's own loss then returns the per-token losses ``[1, n]`` of exactly those
positions. The losses and the gradients are the full computation's (the output layer and the
cross-entropy act on each position independently); the output layer's work shrinks to the
selected share of the tokens.

Only without sequence or context parallelism (the output layer's input is then the whole
``[s, b, h]`` sequence); the training step checks that before opening a scope.
Shapes: S sequence, B batch, H hidden, n selected positions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_POSITIONS: ContextVar[torch.Tensor | None] = ContextVar("nemo_neko_output_positions", default=None)


@contextlib.contextmanager
def output_positions_scope(selected_SB: torch.Tensor | None) -> Iterator[None]:
    """Restrict the output layer to the positions where ``selected_SB`` ``[S, B]`` is True
    (s-major order, as the flattened hidden states); None: every position."""
    token = _POSITIONS.set(selected_SB)
    try:
        yield
    finally:
        _POSITIONS.reset(token)


def _select(module, args, kwargs):
    selected_SB = _POSITIONS.get()
    if selected_SB is None:
        return None
    hidden_SBH = args[0] if args else kwargs.pop("input_")
    if hidden_SBH.shape[:2] != selected_SB.shape:
        raise ValueError(
            f"output positions {tuple(selected_SB.shape)} do not match the hidden states "
            f"{tuple(hidden_SBH.shape[:2])} (sequence or context parallelism?)"
        )
    chosen_N1H = hidden_SBH[selected_SB.to(hidden_SBH.device)].unsqueeze(1)
    return (chosen_N1H, *args[1:]), kwargs


def select_output_positions(gpt) -> None:
    """Prepare ``gpt``'s output layer (when this chunk has one) for :func:`output_positions_scope`."""
    output_layer = getattr(gpt, "output_layer", None)
    if output_layer is not None and getattr(gpt, "post_process", False):
        output_layer.register_forward_pre_hook(_select, with_kwargs=True)


def selected_positions(loss_weight_BS: torch.Tensor) -> torch.Tensor:
    """``[S, B]`` bool: the positions with a loss weight (the scope's argument)."""
    return loss_weight_BS.t() > 0


def gather_selected(x_BS: torch.Tensor, selected_SB: torch.Tensor) -> torch.Tensor:
    """``[1, n]``: the values of ``x_BS`` at the selected positions, in the output layer's order."""
    return x_BS.t()[selected_SB].unsqueeze(0)
