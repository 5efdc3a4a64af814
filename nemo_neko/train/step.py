"""One micro-batch through the model: tensors from a packed batch, task scope, per-task loss.

:func:`make_forward_step` returns the ``forward_step_func`` Megatron's
``get_forward_backward_func()`` schedules call per micro-batch. Each call:

1. turns the packed micro-batch (``[B, L]`` numpy arrays) into tensors on the model's device,
   with a block-diagonal causal mask (local attention: NeKo's SDPA or Megatron's unfused one)
   or ``cu_seqlens`` (Megatron's THD layout, for Transformer Engine);
2. with context parallelism, cuts the batch (tokens, labels, masks, positions *and* task ids)
   once, with Megatron's own ``get_batch_on_this_cp_rank``;
3. runs the model inside :func:`~nemo_neko.moe.task_context.task_routing_scope`, so every NeKo
   MoE layer sees this rank's per-token task ids (the scope slices them for SP only);
4. computes the output layer only at the positions that carry a loss (target tokens, and prompt
   tokens with a prompt loss weight; :mod:`nemo_neko.model.output_positions`) unless sequence
   or context parallelism split the sequence, then returns the per-token losses and :func:`loss_func`, which sums the loss over target tokens and
   reports it overall and per task (``[sum, count]`` pairs, reduced later across micro-batches
   and data-parallel ranks). Gradients are divided by the global number of target tokens
   (``calculate_per_token_loss``): a token-level mean over the whole global batch.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from nemo_neko.data.packing import block_causal_mask, cu_seqlens
from nemo_neko.model.output_positions import (
    gather_selected,
    output_positions_scope,
    selected_positions,
)
from nemo_neko.moe.task_context import task_routing_scope


def batch_to_tensors(
    batch: dict[str, np.ndarray], device: torch.device, packed_attention: bool
) -> dict:
    """Tensors of one packed micro-batch (``[B, L]`` each) and its attention description."""
    out = {
        name: torch.from_numpy(np.ascontiguousarray(value)).to(device)
        for name, value in batch.items()
    }
    if packed_attention:  # THD: the micro-batch as one long sequence [1, B * L]
        out = {name: value.reshape(1, -1) for name, value in out.items()}
        out["attention_mask"] = None
        out["packed_seq_params"] = packed_seq_params(batch["segment_ids"], device)
    else:
        out["attention_mask"] = torch.from_numpy(block_causal_mask(batch["segment_ids"])).to(device)
        out["packed_seq_params"] = None
    return out


def packed_seq_params(segment_ids_BL: np.ndarray, device: torch.device):
    """Transformer Engine's THD description of a packed micro-batch (one long sequence)."""
    from nemo_neko.compat.megatron import packed_seq_params_from_cu_seqlens

    length = segment_ids_BL.shape[1]
    pieces = [cu_seqlens(row) + b * length for b, row in enumerate(segment_ids_BL)]
    boundaries = np.unique(np.concatenate(pieces)).astype(np.int32)
    lengths = np.diff(boundaries)
    return packed_seq_params_from_cu_seqlens(
        torch.from_numpy(boundaries).to(device), int(lengths.max())
    )


def prompt_mask(loss_mask_BL: torch.Tensor, segment_ids_BL: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` float, 1 where position j predicts a prompt token of its own sample (j + 1 in
    the same segment, outside the target span)."""
    same_next = torch.zeros_like(loss_mask_BL, dtype=torch.bool)
    same_next[:, :-1] = (segment_ids_BL[:, :-1] == segment_ids_BL[:, 1:]) & (
        segment_ids_BL[:, :-1] >= 0
    )
    return (same_next & (loss_mask_BL == 0)).float()


def loss_func(
    loss_mask: torch.Tensor,
    task_ids: torch.Tensor,
    num_tasks: int,
    output_tensor: torch.Tensor,
    *,
    prompt_weight_mask: torch.Tensor | None = None,
):
    """Sum of the per-token losses over target tokens, and the figures to report.

    Args:
        loss_mask: ``[B, L]`` 1 where the next token is a target token or EOS.
        task_ids: ``[B, L]`` dataset index of each token (-1 on padding).
        num_tasks: datasets in the mixture.
        output_tensor: ``[B, L]`` per-token cross-entropy from the model.
        prompt_weight_mask: ``[B, L]`` optional weights of an auxiliary loss on prompt tokens
            (``train.prompt_loss_weight`` x :func:`prompt_mask`): added to the loss that is
            back-propagated, still normalised by the target-token count; not reported.

    Returns:
        ``(loss_sum, num_target_tokens, {"lm loss": [sum, count], "task loss": [T, 2]})``;
        the report covers target tokens only.
    """
    per_token = output_tensor.float()
    losses = per_token * loss_mask.float()
    loss_sum = losses.sum()
    if prompt_weight_mask is not None:
        loss_sum = loss_sum + (per_token * prompt_weight_mask).sum()
    num_tokens = loss_mask.sum().to(torch.int)
    per_task = torch.zeros(num_tasks, 2, dtype=torch.float32, device=losses.device)
    tasks = task_ids.clamp(min=0).reshape(-1)
    per_task[:, 0].index_add_(0, tasks, losses.detach().reshape(-1))
    per_task[:, 1].index_add_(0, tasks, loss_mask.float().reshape(-1))
    report = {
        "lm loss": torch.stack([losses.sum().detach(), num_tokens.float()]),
        "task loss": per_task,
    }
    return loss_sum, num_tokens, report


def make_forward_step(
    *,
    num_tasks: int,
    packed_attention: bool,
    parallel,
    prompt_loss_weight: float = 0.0,
):
    """The ``forward_step_func(data_iterator, model)`` for Megatron's schedules.

    Args:
        num_tasks: datasets in the mixture (per-task loss rows).
        packed_attention: use ``packed_seq_params`` (THD) instead of a mask.
        parallel: the :class:`~nemo_neko.parallel.ParallelContext` (sequence parallelism and
            its TP group slice the task ids; CP > 1 cuts the batch with Megatron's own split).
        prompt_loss_weight: ``train.prompt_loss_weight`` (0 = target tokens only).
    """
    from nemo_neko.compat.megatron import context_parallel_batch_slice

    sequence_parallel = parallel.layout.sequence_parallel
    context_parallel = parallel.layout.context > 1
    # the output layer on the loss positions only: needs the whole [s, b, h] sequence there
    select_outputs = not (sequence_parallel or context_parallel or packed_attention)

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        device = next(model.parameters()).device
        sliced = ["input_ids", "labels", "loss_mask", "position_ids", "task_ids"]
        if prompt_loss_weight and model.training:  # from the [B, L] rows, before THD or CP
            mask = prompt_mask(
                torch.from_numpy(batch["loss_mask"]), torch.from_numpy(batch["segment_ids"])
            )
            batch = dict(batch, prompt_weights=(prompt_loss_weight * mask).numpy())
            sliced.append("prompt_weights")
        tensors = batch_to_tensors(batch, device, packed_attention)
        if context_parallel:  # the one CP split, task ids included
            tensors.update(
                context_parallel_batch_slice({k: tensors[k] for k in sliced}, parallel.cp)
            )
        labels, per_token = tensors["labels"], dict(loss_mask=tensors["loss_mask"])
        per_token["task_ids"] = tensors["task_ids"]
        if "prompt_weights" in tensors:
            per_token["prompt_weights"] = tensors["prompt_weights"]
        selected = None
        if select_outputs:  # labels and the per-token figures become [1, n]
            weight = per_token["loss_mask"] + per_token.get("prompt_weights", 0)
            selected = selected_positions(weight)
            labels = gather_selected(labels, selected)
            per_token = {k: gather_selected(v, selected) for k, v in per_token.items()}
        with (
            task_routing_scope(
                tensors["task_ids"],
                sequence_parallel=sequence_parallel,
                tp_group=parallel.tp,
                num_tasks=num_tasks,
            ),
            output_positions_scope(selected),
        ):
            output = model(
                tensors["input_ids"],
                tensors["position_ids"],
                tensors["attention_mask"],
                labels=labels,
                packed_seq_params=tensors["packed_seq_params"],
            )
        return output, partial(
            loss_func,
            per_token["loss_mask"],
            per_token["task_ids"],
            num_tasks,
            prompt_weight_mask=per_token.get("prompt_weights"),
        )

    return forward_step
