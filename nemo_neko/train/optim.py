"""Batch sizes, Megatron DDP, AdamW and the cosine schedule.

The global batch is given in tokens (the paper: 2M). With packed sequences of ``seq_length``
tokens it becomes ``global_batch_sequences = round(tokens / seq_length)``, rounded up to a
multiple of ``micro_batch_size x data_parallel_size``; each rank then runs
``global / (micro x dp)`` micro-batches per step (gradient accumulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is split."""

    global_batch_sequences: int
    micro_batch_size: int
    data_parallel_size: int
    seq_length: int

    @property
    def micro_batches_per_step(self) -> int:
        """Gradient-accumulation steps on each rank."""
        return self.global_batch_sequences // (self.micro_batch_size * self.data_parallel_size)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_sequences * self.seq_length


def plan_batches(
    global_batch_tokens: int, seq_length: int, micro_batch_size: int, dp_size: int
) -> BatchPlan:
    """Turn a token budget per step into sequences, micro-batches and accumulation steps."""
    if micro_batch_size < 1 or dp_size < 1:
        raise ValueError(
            f"micro_batch_size ({micro_batch_size}) and data-parallel size ({dp_size}) must be >= 1"
        )
    unit = micro_batch_size * dp_size
    sequences = max(1, round(global_batch_tokens / seq_length))
    sequences = math.ceil(sequences / unit) * unit
    return BatchPlan(sequences, micro_batch_size, dp_size, seq_length)


def warmup_and_decay_steps(total_steps: int, warmup_fraction: float) -> tuple[int, int]:
    """``(warm-up steps, decay steps)`` of a schedule over ``total_steps`` optimizer steps."""
    warmup = int(round(total_steps * warmup_fraction))
    return warmup, max(total_steps, warmup + 1)


def wrap_ddp(config, chunks, use_distributed_optimizer: bool):
    """Wrap each model chunk in Megatron's ``DistributedDataParallel``."""
    from nemo_neko.compat import megatron as mc

    ddp_config = mc.DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=use_distributed_optimizer,
        check_for_nan_in_grad=True,
    )
    return [
        mc.DistributedDataParallel(config, ddp_config, chunk, disable_bucketing=i > 0)
        for i, chunk in enumerate(chunks)
    ]


def build_optimizer(train, model_config, chunks, total_steps: int):
    """AdamW (Megatron's optimizer, distributed optionally) and the warm-up + cosine schedule."""
    import torch

    from nemo_neko.compat import megatron as mc

    bf16 = model_config.params_dtype == "bfloat16"
    opt_config = mc.OptimizerConfig(
        optimizer="adam",
        lr=train.lr,
        min_lr=train.min_lr,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_eps=train.adam_eps,
        clip_grad=train.clip_grad,
        use_distributed_optimizer=train.use_distributed_optimizer,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
    )
    optimizer = mc.get_megatron_optimizer(opt_config, chunks)
    use_foreach_on_cpu(optimizer)
    warmup, decay = warmup_and_decay_steps(total_steps, train.warmup_fraction)
    scheduler = mc.OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=train.lr,
        min_lr=train.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay,
        lr_decay_style="cosine",
        start_wd=train.weight_decay,
        end_wd=train.weight_decay,
        wd_incr_steps=decay,
        wd_incr_style="constant",
    )
    return optimizer, scheduler


def use_foreach_on_cpu(optimizer) -> None:
    """PyTorch's AdamW (Megatron's fallback without Transformer Engine or apex) picks its
    multi-tensor ``foreach`` implementation only for CUDA parameters; on CPU it would step one
    tensor at a time. Same update, a few calls instead of one per parameter."""
    from nemo_neko.compat import megatron as mc

    for torch_optimizer in mc.torch_optimizers(optimizer):
        for group in torch_optimizer.param_groups:
            if "foreach" in group and all(p.device.type == "cpu" for p in group["params"]):
                group["foreach"] = True
